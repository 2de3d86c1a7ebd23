"""Our hop spans for less, with what is exported unchanged: `set_all` stores what
`set_attributes` would, `RouteTracer.start_span` makes the span `Tracer.start_span` would."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import attributes as otel_attributes
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracer,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from app.config import TracingConfig
from app.honeyhive import Session, StampSampler, with_session
from app.spans import RouteTracer, set_all
from app.tracing import Tracing

START = {"openinference.span.kind": "CHAIN", "honeyhive_event_type": "chain", "router.route": "r"}


def spans(limits: SpanLimits | None = None) -> tuple[Any, InMemorySpanExporter]:
    provider = TracerProvider(sampler=StampSampler("p", "s", DEFAULT_ON), span_limits=limits)
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider.get_tracer("llm_router"), exported


def exported_both_ways(
    updates: list[dict[str, Any]], limits: SpanLimits | None = None
) -> tuple[Any, Any]:
    tracer, exported = spans(limits)
    for setter in (set_all, lambda span, attributes: span.set_attributes(attributes)):
        span = tracer.start_span("route r", with_session(Session("s1")), attributes=START)
        for attributes in updates:
            setter(span, attributes)
        span.end()
    fast, slow = exported.get_finished_spans()
    return fast, slow


def as_exported(span: Any) -> tuple[list[tuple[str, Any]], int]:
    return list(span.attributes.items()), span.dropped_attributes


@pytest.fixture
def cleaning_counted(monkeypatch) -> list[int]:
    """How many times the SDK cleans an attribute mapping or value."""
    calls: list[int] = []
    clean = otel_attributes._clean_attribute_value

    def counted(value: Any, limit: int | None) -> Any:
        calls.append(1)
        return clean(value, limit)

    monkeypatch.setattr(otel_attributes, "_clean_attribute_value", counted)
    return calls


def test_plain_values_are_stored_as_set_attributes_stores_them_without_cleaning(
    cleaning_counted,
) -> None:
    tracer, exported = spans()
    span = tracer.start_span("route r", attributes=START)
    before = len(cleaning_counted)
    set_all(span, {"routing.hops": 2, "cost.estimated_usd": 0.25, "provider.success": True})
    assert len(cleaning_counted) == before  # the fast path: nothing cleaned
    span.end()
    (done,) = exported.get_finished_spans()
    assert done.attributes["routing.hops"] == 2
    assert done.attributes["provider.success"] is True


def test_same_attributes_in_the_same_order_as_set_attributes() -> None:
    # A key already there (the route's own, a stamped one) moves to the end with its new value.
    updates = [
        {"routing.hops": 1, "routing.decision": "smart"},
        {"honeyhive.session_id": "caller", "router.route": "again", "routing.hops": 2},
        {"cost.estimated_usd": 0.5, "router.usage.input_tokens": 3, "x": ""},
    ]
    fast, slow = exported_both_ways(updates)
    assert as_exported(fast) == as_exported(slow)
    assert list(fast.attributes)[-7:] == [
        "routing.decision",
        "honeyhive.session_id",
        "router.route",
        "routing.hops",
        "cost.estimated_usd",
        "router.usage.input_tokens",
        "x",
    ]
    assert fast.attributes["honeyhive.session_id"] == "caller"


@pytest.mark.parametrize(
    "updates",
    [
        [{"routing.candidates": ["a", "b"]}],  # a list: the SDK makes it a tuple
        [{"bad": None}],  # the SDK keeps None as it is, but that is its call to make
        [{"": "empty key"}],  # dropped, and counted as dropped
        [{"big": 10**30, "text": "x" * 300}],
    ],
)
def test_anything_but_plain_values_goes_through_the_sdk(updates) -> None:
    fast, slow = exported_both_ways(updates)
    assert as_exported(fast) == as_exported(slow)


def test_a_length_limit_or_a_full_span_goes_through_the_sdk() -> None:
    limits = SpanLimits(max_attribute_length=4)
    fast, slow = exported_both_ways([{"text": "truncated"}], limits)
    assert fast.attributes["text"] == "trun"
    assert as_exported(fast) == as_exported(slow)

    # 3 at start + 6 stamped, room for 2 more: the oldest are dropped, and counted.
    limits = SpanLimits(max_span_attributes=11)
    fast, slow = exported_both_ways([{"a": 1, "b": 2, "c": 3, "d": 4}], limits)
    assert fast.dropped_attributes == 2
    assert as_exported(fast) == as_exported(slow)


def test_an_ended_span_is_left_as_set_attributes_leaves_it(caplog) -> None:
    tracer, exported = spans()
    span = tracer.start_span("route r", attributes=START)
    span.end()
    set_all(span, {"late": 1})
    assert "late" not in exported.get_finished_spans()[0].attributes
    assert "ended span" in caplog.text


def test_a_span_that_is_not_the_sdks_takes_them_as_it_takes_them() -> None:
    span = NonRecordingSpan(SpanContext(1, 2, is_remote=False))
    set_all(span, {"a": 1})  # no error, nothing stored


# ---- RouteTracer.start_span: our spans made as the SDK makes them, their first attributes clean


def route_tracer(
    limits: SpanLimits | None = None, sampler: Any = None
) -> tuple[RouteTracer, InMemorySpanExporter]:
    provider = TracerProvider(
        sampler=sampler or StampSampler("p", "s", DEFAULT_ON), span_limits=limits
    )
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return RouteTracer(provider.get_tracer("llm_router", "1.0"), frozenset()), exported


def everything(span: Any) -> dict[str, Any]:
    """All an exporter reads of a span, but its own span id and times."""
    context, parent = span.context, span.parent
    return {
        "name": span.name,
        "kind": span.kind,
        "trace_id": context.trace_id,
        "flags": int(context.trace_flags),
        "state": context.trace_state.to_header(),
        "remote": context.is_remote,
        "parent": parent and (parent.span_id, parent.is_remote, int(parent.trace_flags)),
        "attributes": list(span.attributes.items()),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "status": (span.status.status_code, span.status.description),
        "resource": dict(span.resource.attributes),
        "scope": (span.instrumentation_scope.name, span.instrumentation_scope.version),
        "links": list(span.links),
        "events": list(span.events),
    }


def made_both_ways(
    tracer: RouteTracer,
    exported: InMemorySpanExporter,
    attributes: dict[str, Any],
    context: Any = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> tuple[dict[str, Any], dict[str, Any]]:
    fast = tracer.start_span("hop", attributes, context, kind)
    slow = tracer.tracer.start_span("hop", context, kind, attributes=attributes)
    for span in (fast, slow):
        if span.is_recording():
            set_all(span, {"routing.hops": 1})
        span.end()
    if not fast.is_recording() and not exported.get_finished_spans():
        return {"recording": False, "flags": int(fast.get_span_context().trace_flags)}, {
            "recording": False,
            "flags": int(slow.get_span_context().trace_flags),
        }
    one, two = exported.get_finished_spans()
    return everything(one), everything(two)


OWN = {
    "openinference.span.kind": "CHAIN",
    "honeyhive_event_type": "chain",
    "router.route": "r",
    "routing.candidates": ["smart", "cheap"],
    "router.stream": False,
    "attempt.number": 2,
    "cost.estimated_usd": 0.5,
}
REMOTE = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1")]),
)


def in_request() -> Any:
    """A request's context: the caller's (sampled) trace, and a session."""
    return set_span_in_context(NonRecordingSpan(REMOTE), with_session(Session("s1")))


def test_the_gateways_tracer_takes_the_fast_way(cleaning_counted) -> None:
    tracer, exported = route_tracer()
    before = len(cleaning_counted)
    span = tracer.start_span("hop", OWN, with_session(Session("s1")))
    assert len(cleaning_counted) == before  # neither ours nor the stamp cleaned by the SDK
    span.end()
    (done,) = exported.get_finished_spans()
    assert done.attributes["routing.candidates"] == ("smart", "cheap")
    assert list(done.attributes)[:7] == list(OWN)
    assert done.attributes["honeyhive.session_id"] == "s1"


@pytest.mark.parametrize(
    "context",
    [
        None,  # a root span: a new trace (and session)
        set_span_in_context(NonRecordingSpan(REMOTE), with_session(Session("s1"))),
        set_span_in_context(
            NonRecordingSpan(SpanContext(1, 2, is_remote=True)), with_session(Session("s1"))
        ),  # a parent not sampled: the span records nothing
    ],
)
@pytest.mark.parametrize("kind", [SpanKind.INTERNAL, SpanKind.SERVER])
def test_fast_spans_are_the_sdks_spans(context, kind) -> None:
    tracer, exported = route_tracer()
    attributes = {**OWN, "router.metadata.n": 3}
    fast, slow = made_both_ways(tracer, exported, attributes, context, kind)
    if context is None:  # a trace and a session of their own, each
        for made in (fast, slow):
            made.pop("trace_id")
            made["attributes"] = [(k, v) for k, v in made["attributes"] if "session" not in k]
    assert fast == slow


def test_a_child_span_of_ours_has_the_same_parent_either_way() -> None:
    tracer, exported = route_tracer()
    outer = tracer.start_span("outer", OWN, with_session(Session("s1")))
    inner = set_span_in_context(outer, with_session(Session("s1")))
    fast, slow = made_both_ways(tracer, exported, OWN, inner)
    assert fast == slow
    assert fast["parent"][0] == outer.get_span_context().span_id


@pytest.mark.parametrize(
    "attributes",
    [
        {**OWN, "odd": None},  # not plain: the SDK cleans them all
        {**OWN, "mixed": ["a", 1]},
        {**OWN, "": "empty key"},
        {**OWN, "big": 10**30},
    ],
)
def test_unplain_first_attributes_are_cleaned_by_the_sdk(attributes) -> None:
    tracer, exported = route_tracer()
    fast, slow = made_both_ways(tracer, exported, attributes, in_request())
    assert fast == slow


def test_span_limits_either_way() -> None:
    context = in_request()
    # More first attributes than the span may hold: the oldest dropped and counted.
    tracer, exported = route_tracer(SpanLimits(max_span_attributes=8))
    fast, slow = made_both_ways(tracer, exported, OWN, context)
    assert fast["dropped"][0] > 0
    assert fast == slow
    # A string length limit: the SDK's way, strings truncated.
    tracer, exported = route_tracer(SpanLimits(max_attribute_length=3))
    assert not tracer._fast
    fast, slow = made_both_ways(tracer, exported, OWN, context)
    assert ("router.route", "r") in fast["attributes"]
    assert ("openinference.span.kind", "CHA") in fast["attributes"]
    assert fast == slow


def test_another_sampler_or_tracer_is_left_to_the_sdk() -> None:
    tracer, _ = route_tracer(sampler=DEFAULT_ON)
    assert not tracer._fast
    assert not RouteTracer(NoOpTracer(), frozenset())._fast
    span = RouteTracer(NoOpTracer(), frozenset()).start_span("hop", OWN)
    assert not span.is_recording()


def test_the_tracer_the_gateway_starts_with_is_made_for_the_fast_way(monkeypatch) -> None:
    # What makes `RouteTracer.start_span` fall back to the SDK is what the gateway's own set-up
    # must not be: if this fails, every hop span pays the SDK's cleaning again.
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    monkeypatch.delenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    tracing = Tracing.start(TracingConfig(exporter="console"), {}, env={})
    try:
        assert tracing.route_tracer._fast
    finally:
        tracing.shutdown(0.1)
    off = Tracing.start(TracingConfig(exporter="none"), {}, env={})
    assert not off.route_tracer._fast  # records nothing: the SDK's non-recording spans
    off.shutdown(0.1)


def test_a_span_built_with_other_arguments_sends_spans_the_sdks_way(monkeypatch) -> None:
    # An SDK release whose `_Span` takes another required argument (or loses one we pass) must
    # not fail requests: the fast start is then never taken.
    import app.spans as spans

    assert spans._takes_known_arguments()
    original = spans._Span.__init__

    def needs_more(self, *args: Any, new_required: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

    monkeypatch.setattr(spans._Span, "__init__", needs_more)
    assert not spans._takes_known_arguments()
    monkeypatch.setattr(spans, "_SPAN_MADE_AS_KNOWN", spans._takes_known_arguments())
    tracer, _ = route_tracer()
    assert not tracer._fast
