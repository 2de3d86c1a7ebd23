"""The span schema and the mechanics shared by the hop spans (app/hops.py, app/attempts.py).

The attribute names form the schema documented in docs/tracing.md.

Streams: a span is the current span only while its node is being advanced (`attach` …
`detach`), never across a `yield`, so that contexts are attached and detached in the same step,
whichever task closes the stream. A stream's spans end when it ends, fails, or is closed early
(the caller went away): each wrapper ends its span in a `finally` that runs on `aclose()`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import _Span
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    get_current_span,
)

from app.errors import ProviderError
from app.honeyhive import EVENT_TYPE, StampSampler

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
        self._fast = _startable(tracer)

    def start_span(
        self,
        name: str,
        attributes: dict[str, Any],
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        """`tracer.start_span(name, context, kind, attributes=attributes)`, for less.

        The SDK's span takes its first attributes (ours, then the HoneyHive stamp the sampler
        adds) through the same per-attribute cleaning as `set_attributes` (~8k instructions
        each, ~13 per span). When the tracer is the SDK's with our sampler and no limit on a
        string's length, the span is made here as `Tracer.start_span` makes it (same ids,
        sampling, trace flags and state, parent, processors, metrics) but given its first
        attributes already clean when they all are plain values or lists of strings, which
        cleaning would give back as they are (a list as a tuple). Otherwise: the SDK's way.
        """
        tracer = self.tracer
        if not self._fast or not tracer._is_enabled():  # type: ignore[attr-defined]
            return tracer.start_span(name, context, kind, attributes=attributes)
        sdk: Any = tracer
        parent: SpanContext | None = get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = sdk.id_generator.generate_trace_id()
        else:
            trace_id = parent.trace_id
        result = sdk.sampler.should_sample(context, trace_id, name, kind, attributes, ())
        decision = result.decision
        flags = TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT
        random_id = (
            sdk.id_generator.is_trace_id_random()
            if parent is None
            else parent.trace_flags.random_trace_id
        )
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            sdk.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=result.trace_state,
        )
        end_metrics = sdk._tracer_metrics.start_span(parent, decision)
        if not decision.is_recording():
            return NonRecordingSpan(context=span_context)
        first = result.attributes
        limits = sdk._span_limits
        clean = _clean(first) if len(first) <= limits.max_span_attributes else None
        span = _Span(
            name=name,
            context=span_context,
            parent=parent,
            sampler=sdk.sampler,
            resource=sdk.resource,
            attributes=None if clean is not None else first,
            span_processor=sdk.span_processor,
            kind=kind,
            links=(),
            instrumentation_info=sdk.instrumentation_info,
            limits=limits,
            instrumentation_scope=sdk._instrumentation_scope,
            record_end_metrics=end_metrics,
        )
        if clean:
            span._attributes._dict.update(clean)
        span.start(parent_context=context)
        return span


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


_PLAIN = frozenset((str, bool, int, float))


def _takes_known_arguments() -> bool:
    """Whether the SDK's `_Span` is built with exactly the arguments `start_span` passes (any
    other must have a default): a release that changes them sends every span the SDK's way,
    rather than failing a request."""
    try:
        parameters = inspect.signature(_Span.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
    others = [p for name, p in parameters.items() if name != "self" and name not in _SPAN_ARGS]
    return parameters.keys() >= _SPAN_ARGS and all(
        p.default is not inspect.Parameter.empty for p in others
    )


_SPAN_ARGS = frozenset(
    {
        "name",
        "context",
        "parent",
        "sampler",
        "resource",
        "attributes",
        "span_processor",
        "kind",
        "links",
        "instrumentation_info",
        "limits",
        "instrumentation_scope",
        "record_end_metrics",
    }
)
_SPAN_MADE_AS_KNOWN = _takes_known_arguments()


def _startable(tracer: Tracer) -> bool:
    """Whether `RouteTracer.start_span` may make the tracer's spans itself: the SDK's own
    tracer, sampling with our sampler, with the parts of it that `Tracer.start_span` reads,
    and no limit on a string attribute's length (a count limit is checked per span)."""
    if type(tracer) is not SdkTracer or not isinstance(tracer.sampler, StampSampler):
        return False
    limits = getattr(tracer, "_span_limits", None)
    return (
        _SPAN_MADE_AS_KNOWN
        and limits is not None
        and limits.max_span_attribute_length is None
        and limits.max_span_attributes is not None
        and all(
            hasattr(tracer, name)
            for name in ("_tracer_metrics", "_instrumentation_scope", "_is_enabled")
        )
    )


def _clean(attributes: Any) -> dict[str, Any] | None:
    """The attributes as the SDK's cleaning gives them back, when that is as they are (a list
    of strings: as a tuple); None if any is not that plain (the SDK then cleans them all)."""
    clean: dict[str, Any] = {}
    for key, value in attributes.items():
        if type(key) is not str or not key:
            return None
        kind = type(value)
        if kind in _PLAIN:
            clean[key] = value
        elif (kind is list or kind is tuple) and all(type(v) is str for v in value):
            clean[key] = tuple(value)
        else:
            return None
    return clean


def set_all(span: Span, attributes: dict[str, Any]) -> None:
    """`span.set_attributes(attributes)`, with what is exported unchanged, for less.

    The SDK cleans every attribute it is given (a validating call per key and value, then one
    per key to store it: ~8k instructions each). The attributes our hops set when their work
    ends are plain strings, booleans and numbers under string keys, which cleaning gives back
    as they are; so when the span is the SDK's own, still recording, with no limit on a string's
    length and room for them all, they are stored as the SDK stores them: a key already there
    moves to the end, taking the new value. Anything else (another span class, a length limit,
    a value of another type, a span near its attribute limit, an ended span) goes through
    `set_attributes`.
    """
    stored = getattr(span, "_attributes", None)
    if (
        type(stored) is BoundedAttributes
        and isinstance(span, SdkSpan)
        and stored.max_value_len is None
        and (stored.maxlen is None or len(stored) + len(attributes) <= stored.maxlen)
        and all(type(k) is str and k and type(v) in _PLAIN for k, v in attributes.items())
    ):
        with span._lock:  # what `set_attributes` holds
            if span._end_time is None and not stored._immutable:
                with stored._lock:
                    items = stored._dict
                    for key in attributes:
                        if key in items:
                            del items[key]
                    items.update(attributes)
                return
    span.set_attributes(attributes)


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
