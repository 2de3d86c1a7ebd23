"""Shared by the tracing tests: a traced gateway beside a real OTLP receiver, and tree lookups."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config import parse_config
from app.factory import create_app
from tests.fakes.otlp_collector import Collector, Span
from tests.fakes.server import serve_app


@dataclass
class Traced:
    url: str
    app: FastAPI
    collector: Collector

    def spans(self, trace_id: str, count: int) -> list[Span]:
        self.app.state.tracing.flush()
        return self.collector.trace(trace_id, count)


@pytest.fixture
def collector(stack: ExitStack) -> tuple[Collector, str]:
    receiver = Collector()
    return receiver, stack.enter_context(serve_app(receiver.app))


@pytest.fixture
def traced(stack: ExitStack, collector: tuple[Collector, str]) -> Callable[..., Traced]:
    """Serve a gateway whose spans go over OTLP/HTTP to the test's collector.

    `tracing` is the YAML flow mapping for the `tracing:` section; `{collector}` in it, or in
    the rest of the config, is replaced by the collector's base URL."""
    receiver, url = collector

    def serve(
        body: str, tracing: str = '{exporter: otlp, endpoint: "{collector}/v1/traces"}'
    ) -> Traced:
        text = f"tracing: {tracing}\n{body}".replace("{collector}", url)
        app = create_app(parse_config(text, env={}))
        return Traced(stack.enter_context(serve_app(app)), app, receiver)

    return serve


@contextmanager
def openai_spans(provider: TracerProvider | None = None) -> Iterator[InMemorySpanExporter]:
    """OpenInference's OpenAI instrumentor on `provider` (the SDK's own by default), recording
    into memory, for the block only."""
    from openinference.instrumentation.openai import OpenAIInstrumentor

    exporter = InMemorySpanExporter()
    provider = provider or TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in spans]}"
    return found[0]


def children(spans: list[Span], parent: Span) -> list[Span]:
    return sorted((s for s in spans if s.parent_id == parent.span_id), key=lambda s: s.start_ns)
