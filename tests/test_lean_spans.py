"""The SDK's tracer and span made lean (app/lean_spans.py): what is exported is what the SDK's own
tracer and span export, attribute for attribute and in order, for less work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import attributes as otel_attributes
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    NoOpTracer,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

import app.lean_spans as lean_spans
from app.config import TracingConfig
from app.honeyhive import Session, StampSampler, with_session
from app.lean_spans import LeanSpan, LeanTracer, LeanTracerProvider, lean
from app.tracing import Tracing

START = {"openinference.span.kind": "CHAIN", "honeyhive_event_type": "chain", "router.route": "r"}
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


def tracers(
    limits: SpanLimits | None = None, sampler: Any = None
) -> tuple[Any, Any, InMemorySpanExporter]:
    """(a lean tracer, the SDK's own tracer), alike in all else, exporting to one place."""
    exported = InMemorySpanExporter()
    made = []
    for kind in (LeanTracerProvider, TracerProvider):
        provider = kind(sampler=sampler or StampSampler("p", "s", DEFAULT_ON), span_limits=limits)
        provider.add_span_processor(SimpleSpanProcessor(exported))
        made.append(provider.get_tracer("llm_router", "1.0"))
    return made[0], made[1], exported


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
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "events": [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
    }


Update = Callable[[Any], None]


def made_both_ways(
    attributes: dict[str, Any] | None = START,
    updates: list[Update] = (),  # type: ignore[assignment]
    context: Any = None,
    kind: SpanKind = SpanKind.INTERNAL,
    limits: SpanLimits | None = None,
    **start: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    fast_tracer, sdk_tracer, exported = tracers(limits)
    made, recording = [], []
    for tracer in (fast_tracer, sdk_tracer):
        span = tracer.start_span("hop", context, kind, attributes=attributes, **start)
        recording.append(span.is_recording())
        for update in updates:
            update(span)
        span.end()
        made.append(span)
    if not recording[0]:
        assert not recording[1]
        return (
            {"flags": int(made[0].get_span_context().trace_flags)},
            {"flags": int(made[1].get_span_context().trace_flags)},
        )
    assert type(made[0]) is LeanSpan
    fast, slow = (everything(s) for s in exported.get_finished_spans())
    for one in (fast, slow):
        if one["parent"] is None:  # a trace of its own, each
            one.pop("trace_id")
        if context is None:  # and a session of its own
            one["attributes"] = [(k, v) for k, v in one["attributes"] if "session" not in k]
    return fast, slow


def set_all(attributes: dict[str, Any]) -> Update:
    return lambda span: span.set_attributes(attributes)


def set_one(key: str, value: Any) -> Update:
    return lambda span: span.set_attribute(key, value)


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


# ---- set_attribute(s): plain values stored as the SDK stores them, without cleaning


def test_plain_values_are_stored_without_cleaning(cleaning_counted) -> None:
    tracer, _, exported = tracers()
    span = tracer.start_span("route r", attributes=START)
    before = len(cleaning_counted)
    span.set_attributes({"routing.hops": 2, "cost.estimated_usd": 0.25, "provider.success": True})
    span.set_attribute("llm.model_name", "m")
    assert len(cleaning_counted) == before  # the lean way: nothing cleaned
    span.end()
    (done,) = exported.get_finished_spans()
    assert done.attributes["routing.hops"] == 2
    assert done.attributes["provider.success"] is True
    assert done.attributes["llm.model_name"] == "m"


def test_same_attributes_in_the_same_order() -> None:
    # A key already there (the route's own, a stamped one) moves to the end with its new value.
    updates = [
        set_all({"routing.hops": 1, "routing.decision": "smart"}),
        set_all({"honeyhive.session_id": "caller", "router.route": "again", "routing.hops": 2}),
        set_one("routing.decision", "cheap"),
        set_one("x", ""),
        set_all({"cost.estimated_usd": 0.5, "router.usage.input_tokens": 3}),
    ]
    fast, slow = made_both_ways(START, updates, with_session(Session("s1")))
    assert fast == slow
    assert [k for k, _ in fast["attributes"]][-7:] == [
        "honeyhive.session_id",
        "router.route",
        "routing.hops",
        "routing.decision",
        "x",
        "cost.estimated_usd",
        "router.usage.input_tokens",
    ]


@pytest.mark.parametrize(
    "update",
    [
        set_all({"routing.candidates": ["a", "b"]}),  # a list: the SDK makes it a tuple
        set_one("routing.candidates", ["a", "b"]),
        set_all({"bad": None}),  # the SDK's call to make
        set_one("bad", None),
        set_all({"": "empty key"}),  # dropped, and counted as dropped
        set_one("", "empty key"),
        set_all({"big": 10**30, "text": "x" * 300}),
        set_one("mixed", ["a", 1]),
    ],
)
def test_anything_but_plain_values_goes_through_the_sdk(update) -> None:
    fast, slow = made_both_ways(START, [update], with_session(Session("s1")))
    assert fast == slow


def test_a_length_limit_or_a_full_span_goes_through_the_sdk() -> None:
    context = with_session(Session("s1"))
    limits = SpanLimits(max_attribute_length=4)
    fast, slow = made_both_ways(START, [set_all({"text": "truncated"})], context, limits=limits)
    assert ("text", "trun") in fast["attributes"]
    assert fast == slow
    fast, slow = made_both_ways(START, [set_one("text", "truncated")], context, limits=limits)
    assert ("text", "trun") in fast["attributes"]
    assert fast == slow

    # 3 at start + 6 stamped, room for 2 more: the oldest are dropped, and counted.
    limits = SpanLimits(max_span_attributes=11)
    updates = [set_all({"a": 1, "b": 2, "c": 3, "d": 4})]
    fast, slow = made_both_ways(START, updates, context, limits=limits)
    assert fast["dropped"][0] == 2
    assert fast == slow
    updates = [set_one(k, 1) for k in "abcd"] + [set_one("a", 2)]
    fast, slow = made_both_ways(START, updates, context, limits=limits)
    assert fast["dropped"][0] == 2  # c and d took the oldest two; a only moved
    assert fast == slow


@pytest.mark.parametrize("update", [set_all({"late": 1}), set_one("late", 1)])
def test_an_ended_span_is_left_as_the_sdk_leaves_it(caplog, update) -> None:
    tracer, _, exported = tracers()
    span = tracer.start_span("route r", attributes=START)
    span.end()
    update(span)
    assert "late" not in exported.get_finished_spans()[0].attributes
    assert "ended span" in caplog.text


# ---- start_span: spans made as the SDK makes them, their first attributes clean


def test_the_first_attributes_are_not_cleaned(cleaning_counted) -> None:
    tracer, _, exported = tracers()
    before = len(cleaning_counted)
    span = tracer.start_span("hop", with_session(Session("s1")), attributes=OWN)
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
def test_lean_spans_are_the_sdks_spans(context, kind) -> None:
    attributes = {**OWN, "router.metadata.n": 3}
    fast, slow = made_both_ways(attributes, [set_all({"routing.hops": 1})], context, kind)
    assert fast == slow


def test_links_start_times_and_exception_switches_are_kept() -> None:
    link = Link(REMOTE, {"why": "retry"})
    fast, slow = made_both_ways(
        OWN,
        [lambda span: span.record_exception(ValueError("x"), timestamp=5)],
        with_session(Session("s1")),
        links=[link],
        start_time=1_000,
        record_exception=False,
        set_status_on_exception=False,
    )
    assert fast == slow
    assert fast["links"] == [(REMOTE, {"why": "retry"})]
    assert fast["events"] and fast["status"] == slow["status"]
    tracer, _, exported = tracers()
    with (
        pytest.raises(ValueError),
        tracer.start_as_current_span("hop", record_exception=False) as span,
    ):
        assert type(span) is LeanSpan
        raise ValueError("not recorded")
    (done,) = exported.get_finished_spans()
    assert list(done.events) == []  # not recorded, as asked


def test_a_child_span_has_the_same_parent_either_way() -> None:
    tracer, _, _ = tracers()
    outer = tracer.start_span("outer", with_session(Session("s1")), attributes=OWN)
    inner = set_span_in_context(outer, with_session(Session("s1")))
    fast, slow = made_both_ways(OWN, [], inner)
    assert fast == slow
    assert fast["parent"][0] == outer.get_span_context().span_id


@pytest.mark.parametrize(
    "attributes",
    [
        {**OWN, "odd": None},  # not plain: the SDK cleans them all
        {**OWN, "mixed": ["a", 1]},
        {**OWN, "": "empty key"},
        {**OWN, "big": 10**30},
        None,
        {},
    ],
)
def test_unplain_or_no_first_attributes_are_the_sdks_to_clean(attributes) -> None:
    context = set_span_in_context(NonRecordingSpan(REMOTE), with_session(Session("s1")))
    fast, slow = made_both_ways(attributes, [], context)
    assert fast == slow


def test_span_limits_either_way() -> None:
    context = set_span_in_context(NonRecordingSpan(REMOTE), with_session(Session("s1")))
    # More first attributes than the span may hold: the oldest dropped and counted.
    fast, slow = made_both_ways(OWN, [], context, limits=SpanLimits(max_span_attributes=8))
    assert fast["dropped"][0] > 0
    assert fast == slow
    # A string length limit: the SDK's way, strings truncated.
    fast, slow = made_both_ways(OWN, [], context, limits=SpanLimits(max_attribute_length=3))
    assert ("router.route", "r") in fast["attributes"]
    assert ("openinference.span.kind", "CHA") in fast["attributes"]
    assert fast == slow


def test_only_the_sdks_own_tracer_is_made_lean() -> None:
    assert type(lean(NoOpTracer())) is NoOpTracer

    class Other(SdkTracer):
        pass

    other = TracerProvider().get_tracer("x")
    other.__class__ = Other
    assert type(lean(other)) is Other
    provider = LeanTracerProvider()
    assert type(provider.get_tracer("x")) is LeanTracer
    assert provider.get_tracer("x") is provider.get_tracer("x")  # one per scope, as the SDK's


def test_the_gateways_tracer_provider_is_lean(monkeypatch) -> None:
    # If this fails, every span of a traced request pays the SDK's cleaning again.
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    monkeypatch.delenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    tracing = Tracing.start(TracingConfig(exporter="console"), {}, env={})
    try:
        assert type(tracing.route_tracer.tracer) is LeanTracer
        assert type(tracing.provider.get_tracer("an.instrumentor")) is LeanTracer
        span = tracing.route_tracer.start_span("route r", dict(START))
        assert type(span) is LeanSpan
        span.end()
    finally:
        tracing.shutdown(0.1)
    off = Tracing.start(TracingConfig(exporter="none"), {}, env={})
    try:  # records nothing: the SDK's non-recording spans, ids only
        span = off.route_tracer.start_span("route r", dict(START))
        assert not span.is_recording() and span.get_span_context().is_valid
    finally:
        off.shutdown(0.1)


def test_a_span_built_with_other_arguments_leaves_tracers_to_the_sdk(monkeypatch) -> None:
    # An SDK release whose `_Span` takes another required argument (or loses one we pass) must
    # not fail requests: no tracer is then made lean.
    assert lean_spans._takes_known_arguments()
    original = lean_spans._Span.__init__

    def needs_more(self, *args: Any, new_required: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

    monkeypatch.setattr(lean_spans._Span, "__init__", needs_more)
    assert not lean_spans._takes_known_arguments()
    monkeypatch.setattr(lean_spans, "_SPAN_MADE_AS_KNOWN", lean_spans._takes_known_arguments())
    assert type(LeanTracerProvider().get_tracer("x")) is SdkTracer
