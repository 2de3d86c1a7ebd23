"""The span schema and the mechanics shared by the hop spans (app/hops.py, app/attempts.py).

The attribute names form the schema documented in docs/tracing.md.

Streams: a span is the current span only while its node is being advanced (`attach` …
`detach`), never across a `yield`, so that contexts are attached and detached in the same step,
whichever task closes the stream. A stream's spans end when it ends, fails, or is closed early
(the caller went away): each wrapper ends its span in a `finally` that runs on `aclose()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)

from app.errors import ProviderError
from app.honeyhive import EVENT_TYPE

T = TypeVar("T")

# ---- the schema (docs/tracing.md) --------------------------------------------------------------

SPAN_KIND = "openinference.span.kind"  # CHAIN for our steps, LLM for an uninstrumented call
ROUTE = "router.route"
POLICY = "router.policy"
PATH = "router.path"
OUTCOME = "router.outcome"
CANDIDATES = "router.candidates"
CANCELLED = "router.cancelled"
ERROR = "router.error"
DECISION = "routing.decision"
MODEL = "routing.model"
REASON = "routing.reason"
HOPS = "routing.hops"
HOP = "routing.hop"
TARGETS = "routing.candidates"
TARGET = "router.target"
PROVIDER = "provider.name"
PROVIDER_TYPE = "provider.type"
PROVIDER_MODEL = "provider.model"
ATTEMPT = "attempt.number"
SUCCESS = "provider.success"
PROVIDER_ERROR = "provider.error"
PROVIDER_STATUS = "provider.status_code"
COST = "cost.estimated_usd"
INPUT_TOKENS = "router.usage.input_tokens"
OUTPUT_TOKENS = "router.usage.output_tokens"

CHAIN = {SPAN_KIND: "CHAIN", EVENT_TYPE: "chain"}


class RouteTracer:
    """What a call needs to trace its hops: the tracer, and which provider types an
    instrumentor covers (an uncovered call is described on its attempt span instead).

    `recording` False: the tracer's spans record nothing (exporter `none`), so a request's
    spans are made only for their ids and the hops inside it are not made at all."""

    def __init__(
        self, tracer: Tracer, instrumented_types: frozenset[str], recording: bool = True
    ) -> None:
        self.tracer = tracer
        self.instrumented_types = instrumented_types
        self.recording = recording

    def start_span(
        self,
        name: str,
        attributes: dict[str, Any],
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        return self.tracer.start_span(name, context, kind, attributes=attributes)


# ---- shared mechanics ------------------------------------------------------------------------


class current:
    """`span` as the current span for the `with` block (what `trace.use_span` does, without
    ending the span or recording exceptions; a class rather than a generator-based context
    manager, as this is entered for every event of a stream)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)


def attach(span: Span) -> object:
    """Make `span` current until `otel_context.detach` is given what this returns: around every
    event a traced stream passes on, written out rather than as an awaited helper (a coroutine
    per event and layer) or a `with` block."""
    return otel_context.attach(trace.set_span_in_context(span))


detach = otel_context.detach


async def spanned(
    start: Callable[[], Span],
    open_events: Callable[[], AsyncIterator[T]],
    finish: Callable[[Span, BaseException | None], None],
) -> AsyncIterator[T]:
    """A stream as one span: started at the first step, current at every step (never across a
    yield), current while the stream is closed, and finished once however the stream ends."""
    span = start()
    events = open_events()
    error: BaseException | None = None
    try:
        while True:
            token = attach(span)
            try:
                event = await anext(events)
            except StopAsyncIteration:
                break
            finally:
                detach(token)
            yield event
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            with current(span):
                await events.aclose()  # type: ignore[attr-defined]
        finally:
            finish(span, error)


def scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def ended(span: Span, exc: BaseException | None) -> None:
    """Status and error attributes for how a node's work ended."""
    if exc is None:
        return
    if isinstance(exc, ProviderError):
        span.set_attribute(ERROR, exc.kind.value)
        span.set_status(Status(StatusCode.ERROR, f"{exc.kind.value}: {exc.message}"))
    elif isinstance(exc, GeneratorExit | asyncio.CancelledError):
        span.set_attribute(CANCELLED, True)
        span.set_status(Status(StatusCode.ERROR, "cancelled: closed before its end"))
    else:
        span.set_attribute(ERROR, type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
