"""`set_all`: the hops' bulk attribute setter stores what `set_attributes` would, for less."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import attributes as otel_attributes
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext

from app.honeyhive import Session, StampSampler, with_session
from app.spans import set_all

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
