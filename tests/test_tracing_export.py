"""Export: the HoneyHive-shaped endpoint, a hanging collector, the bounded queue, and the
instrumentors' start-up report."""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import ExitStack

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from app.config import ConfigError, TracingConfig, parse_config
from app.export import BoundedBatchProcessor
from app.factory import create_app
from app.instrumentors import install
from app.tracing import Tracing
from providers.openai import OpenAIConfig
from tests.fakes.otlp_collector import Collector
from tests.fakes.server import serve_app
from tests.tracing_helpers import Traced, one

SIM = """
providers:
  sim: {type: simulated, latency_ms: 5}
models:
  fast: {provider: sim, model: sim-1}
routes:
  default: fast
"""
ASK = {"messages": [{"role": "user", "content": "Hi"}]}


def test_honeyhive_endpoint_path_headers_and_session(traced) -> None:
    gw: Traced = traced(
        SIM,
        tracing="{exporter: honeyhive, api_key: hh-secret-key, api_url: '{collector}', "
        "project: rain, source: staging}",
    )
    # One request on its own session, two on the caller's conversation.
    alone = httpx.post(gw.url + "/v1/chat", json=ASK)
    first = httpx.post(gw.url + "/v1/chat", json=ASK, headers={"x-session-id": "conv-42"})
    second = httpx.post(
        gw.url + "/v1/chat", json={**ASK, "metadata": {"session_id": "conv-43", "tier": "gold"}}
    )
    traces = {
        name: gw.spans(r.headers["x-trace-id"], 3)
        for name, r in (("alone", alone), ("first", first), ("second", second))
    }
    post = gw.collector.posts[0]
    assert post.path == "/opentelemetry/v1/traces"
    assert post.headers["authorization"] == "Bearer hh-secret-key"
    assert post.headers["x-source"] == "staging"
    assert post.headers["content-type"] == "application/x-protobuf"

    for name, spans in traces.items():
        sessions = {s.attributes["honeyhive.session_id"] for s in spans}
        assert len(sessions) == 1, (name, sessions)  # every span, same session
        for span in spans:
            assert span.attributes["honeyhive.project"] == "rain"
            assert span.attributes["honeyhive.source"] == "staging"
            assert span.resource["honeyhive.source"] == "staging"
            assert span.attributes["traceloop.association.properties.session_id"] in sessions
        events = {s.name: s.attributes["honeyhive_event_type"] for s in spans}
        assert events == {
            "POST /v1/chat": "chain",
            "route default": "chain",
            "attempt fast": "model",
        }
    assert {s.attributes["honeyhive.session_id"] for s in traces["first"]} == {"conv-42"}
    assert {s.attributes["honeyhive.session_id"] for s in traces["second"]} == {"conv-43"}
    assert one(traces["second"], "route default").attributes["router.metadata.tier"] == "gold"
    (own,) = {s.attributes["honeyhive.session_id"] for s in traces["alone"]}
    assert own not in ("conv-42", "conv-43")
    assert "hh-secret-key" not in repr([s.attributes for t in traces.values() for s in t])


def test_honeyhive_without_a_key_refuses_to_start() -> None:
    config = parse_config("tracing: {exporter: honeyhive}\n" + SIM, env={})
    with pytest.raises(ConfigError) as caught:
        Tracing.start(config.tracing, config.providers, env={})
    assert "tracing.api_key" in str(caught.value) and "HH_API_KEY" in str(caught.value)
    # The environment's key is enough.
    tracing = Tracing.start(config.tracing, config.providers, env={"HH_API_KEY": "k"})
    tracing.shutdown(timeout_s=0)


def _latencies(url: str, count: int) -> list[float]:
    out = []
    with httpx.Client() as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.post(url + "/v1/chat", json=ASK).status_code == 200
            out.append(time.perf_counter() - started)
    return out


def test_a_hanging_collector_does_not_slow_requests(stack: ExitStack) -> None:
    hanging = Collector(hang_s=30)
    hanging_url = stack.enter_context(serve_app(hanging.app))

    def gateway(tracing: str) -> str:
        return stack.enter_context(
            serve_app(create_app(parse_config(f"tracing: {tracing}\n{SIM}", env={})))
        )

    untraced = gateway("{exporter: none}")
    stuck = gateway(f'{{exporter: otlp, endpoint: "{hanging_url}/v1/traces"}}')
    _latencies(untraced, 5), _latencies(stuck, 5)  # warm both
    base = statistics.median(_latencies(untraced, 40))
    started = time.monotonic()
    slow = _latencies(stuck, 40)  # spans pile up behind an export that never answers
    assert time.monotonic() - started < 10
    # A blocked export would cost seconds; the slack only absorbs a shared machine's noise.
    assert statistics.median(slow) < base + 0.025, (statistics.median(slow), base)
    assert max(slow) < 1.0


def test_bounded_queue_drops_counts_and_logs_once(stack: ExitStack, caplog) -> None:
    hanging = Collector(hang_s=30)
    url = stack.enter_context(serve_app(hanging.app))
    batch = BoundedBatchProcessor(
        OTLPSpanExporter(endpoint=url + "/v1/traces", timeout=2),
        max_queue=20,
        max_batch=5,
        delay_s=0.01,
        report_every_s=0.0,
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(batch)
    tracer = provider.get_tracer("test")
    started = time.perf_counter()
    for i in range(500):
        tracer.start_span(f"s{i}").end()
    assert time.perf_counter() - started < 0.5  # nothing waited for the collector
    assert batch.dropped >= 500 - 20 - 5
    with caplog.at_level(logging.WARNING, logger="llm_router.tracing"):
        started = time.monotonic()
        batch.shutdown(timeout_s=0.5)
        assert time.monotonic() - started < 2
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and str(batch.dropped) in drops[0].getMessage()


class _SlowCounting(SpanExporter):
    """An exporter that takes `seconds` per batch and keeps the size of each."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[int] = []

    def export(self, spans) -> SpanExportResult:
        time.sleep(self.seconds)
        self.batches.append(len(spans))
        return SpanExportResult.SUCCESS


def test_spans_arriving_steadily_go_out_once_per_delay_not_after_every_post() -> None:
    """While spans keep arriving, a batch waits for `delay_s` (or a full batch), not only for
    the previous POST to be done: sending whatever had arrived as soon as it was free, the
    thread posted a small batch every few milliseconds under load."""
    exporter = _SlowCounting(0.02)
    batch = BoundedBatchProcessor(exporter, max_batch=1000, delay_s=0.4)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(batch)
    tracer = provider.get_tracer("test")
    try:
        for i in range(100):  # one span every 10 ms for about a second
            tracer.start_span(f"s{i}").end()
            time.sleep(0.01)
        assert batch.force_flush(5000)
        assert sum(exporter.batches) == 100
        # ~1.1 s of spans at one batch per 0.4 s: 3 or 4 (sending after each POST: dozens).
        assert len(exporter.batches) <= 5, exporter.batches
    finally:
        batch.shutdown(timeout_s=1)


def test_a_full_batch_goes_out_without_waiting_for_the_delay() -> None:
    exporter = _SlowCounting(0.0)
    batch = BoundedBatchProcessor(exporter, max_batch=10, delay_s=30)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(batch)
    tracer = provider.get_tracer("test")
    try:
        for i in range(25):
            tracer.start_span(f"s{i}").end()
        deadline = time.monotonic() + 5
        while sum(exporter.batches) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exporter.batches[:2] == [10, 10]  # the last 5 wait for the delay or a flush
        assert batch.force_flush(5000)
        assert exporter.batches == [10, 10, 5]
    finally:
        batch.shutdown(timeout_s=1)


def test_a_flush_does_not_keep_the_thread_spinning_once_the_queue_is_empty() -> None:
    class Counting(BoundedBatchProcessor):
        rounds = 0

        def _export_some(self) -> None:
            Counting.rounds += 1
            super()._export_some()

    exporter = _SlowCounting(0.1)
    batch = Counting(exporter, max_batch=1000, delay_s=30)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(batch)
    try:
        provider.get_tracer("test").start_span("s").end()
        assert batch.force_flush(5000)
        time.sleep(0.2)
        assert exporter.batches == [1]
        assert Counting.rounds <= 3  # the flush's batch (and a wake-up or two), not a spin
    finally:
        batch.shutdown(timeout_s=1)


def test_an_instrumentor_that_refuses_the_sdk_is_reported(monkeypatch) -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    providers = {"p": OpenAIConfig(api_key="k")}
    monkeypatch.setattr(
        OpenAIInstrumentor, "instrumentation_dependencies", lambda self: ("openai >= 99",)
    )
    installed = install(providers, TracerProvider(shutdown_on_exit=False), capture=True)
    assert installed.instrumented == {}
    assert installed.report["openai"].startswith("NOT instrumented")
    assert "openai >= 99" in installed.report["openai"]


def test_an_instrumentor_that_patches_nothing_is_reported(monkeypatch) -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    monkeypatch.setattr(OpenAIInstrumentor, "_instrument", lambda self, **kw: None)
    monkeypatch.setattr(OpenAIInstrumentor, "_uninstrument", lambda self, **kw: None)
    installed = install(
        {"p": OpenAIConfig(api_key="k")}, TracerProvider(shutdown_on_exit=False), capture=True
    )
    assert installed.report["openai"] == (
        "NOT instrumented: openinference-instrumentation-openai patched nothing"
    )
    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry


def test_a_working_instrumentor_is_reported_and_undone() -> None:
    import openai

    before = openai.AsyncOpenAI.request
    config = TracingConfig(exporter="console")
    tracing = Tracing.start(config, {"p": OpenAIConfig(api_key="k")}, env={})
    try:
        assert tracing.installed.report["openai"] == (
            "instrumented by openinference-instrumentation-openai (openinference)"
        )
        assert openai.AsyncOpenAI.request is not before
    finally:
        tracing.shutdown(timeout_s=0)
    assert openai.AsyncOpenAI.request is before


def test_exporter_none_still_gives_every_request_its_trace_id(serve_gateway) -> None:
    """Nothing is recorded with nowhere to send it, but the ids remain: x-trace-id on each
    answer (the same id the route saw), and a caller's traceparent continues its trace."""
    url = serve_gateway(f"tracing: {{exporter: none}}\n{SIM}")
    first = httpx.post(url + "/v1/chat", json=ASK)
    second = httpx.post(url + "/v1/chat", json=ASK)
    ids = [r.headers["x-trace-id"] for r in (first, second)]
    assert all(len(i) == 32 and int(i, 16) != 0 for i in ids)
    assert ids[0] != ids[1]
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    joined = httpx.post(
        url + "/v1/chat",
        json=ASK,
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert joined.headers["x-trace-id"] == trace_id
    failed = httpx.post(url + "/v1/chat", json={**ASK, "model": "nope"})
    assert failed.status_code >= 400 and len(failed.headers["x-trace-id"]) == 32


def test_exporter_none_makes_no_hop_spans_and_keeps_the_request_trace(stack: ExitStack) -> None:
    """With nothing recorded, the route, policy and attempt spans are not made at all (their
    attributes would be built for nothing): one span per request, for its ids. The trace id the
    route reports is still the request's, a caller's traceparent included."""
    text = f"""tracing: {{exporter: none}}
{SIM}  policy:
    classify:
      rules: {{creative: [haiku]}}
      branches: {{creative: {{failover: [fast, fast]}}}}
      otherwise: fast
"""
    app = create_app(parse_config(text, env={}))
    tracer = app.state.gateway.tracer
    assert tracer is not None and not tracer.recording
    started: list[str] = []
    real_start = tracer.tracer.start_span

    def counting_start(name: str, *args, **kwargs):
        started.append(name)
        return real_start(name, *args, **kwargs)

    tracer.tracer.start_span = counting_start  # type: ignore[method-assign]
    url = stack.enter_context(serve_app(app))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    for model in ("default", "policy", "fast"):
        messages = [{"role": "user", "content": "a haiku"}]
        started.clear()
        answer = httpx.post(
            url + "/v1/chat",
            json={"route": model, "messages": messages},
            headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )
        assert answer.status_code == 200, answer.text
        assert started == ["POST /v1/chat"], model
        assert answer.json()["trace_id"] == answer.headers["x-trace-id"] == trace_id
        started.clear()
        fresh = httpx.post(
            url + "/v1/chat/completions", json={"model": model, "messages": messages}
        )
        assert fresh.status_code == 200 and started == ["POST /v1/chat/completions"]
        assert len(fresh.headers["x-trace-id"]) == 32 and fresh.headers["x-trace-id"] != trace_id


def test_exporter_none_route_outside_a_request_gets_a_trace_of_its_own() -> None:
    """A call run outside any request's span (no server span to join) still gets a trace id."""
    import asyncio

    from app.chat import ChatRequest

    app = create_app(parse_config(f"tracing: {{exporter: none}}\n{SIM}", env={}))
    gateway = app.state.gateway

    async def run() -> str | None:
        call = gateway.new_call(ChatRequest.model_validate({**ASK, "route": "default"}))
        assert call.tracer is None  # no hop spans
        await gateway.node_for("default").complete(call)
        await gateway.aclose()
        return call.trace_id

    trace_id = asyncio.run(run())
    assert trace_id is not None and len(trace_id) == 32 and int(trace_id, 16) != 0
