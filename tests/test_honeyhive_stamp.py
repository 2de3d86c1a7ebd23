"""The HoneyHive stamp (app/honeyhive.py), given by the sampler as each span starts."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON, ParentBased
from opentelemetry.sdk.trace.sampling import ALWAYS_ON as ALWAYS_ON_SAMPLER
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from app.honeyhive import (
    EVENT_TYPE,
    PROJECT,
    SESSION_ID,
    SOURCE,
    TL_PROJECT,
    TL_SESSION_ID,
    TL_SOURCE,
    Session,
    StampSampler,
    default_sampler,
    with_session,
)

STAMP_KEYS = [SESSION_ID, TL_SESSION_ID, PROJECT, TL_PROJECT, SOURCE, TL_SOURCE]


def provider(delegate=None) -> tuple[TracerProvider, list[ReadableSpan]]:
    sampler = StampSampler("rain", "staging", delegate or ParentBased(ALWAYS_ON_SAMPLER))
    made = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    finished: list[ReadableSpan] = []

    class Keep(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            finished.append(span)

    made.add_span_processor(Keep())
    return made, finished


def test_own_attributes_first_then_the_stamp_and_the_request_session() -> None:
    made, finished = provider()
    ctx = with_session(Session("conv-7", from_caller=True))
    tracer = made.get_tracer("llm_router")
    tracer.start_span("route r", ctx, attributes={EVENT_TYPE: "chain", "router.route": "r"}).end()
    (span,) = finished
    assert list(span.attributes) == [EVENT_TYPE, "router.route", *STAMP_KEYS]
    assert span.attributes[EVENT_TYPE] == "chain"  # said by the span itself: kept
    assert span.attributes[SESSION_ID] == span.attributes[TL_SESSION_ID] == "conv-7"
    assert (span.attributes[PROJECT], span.attributes[TL_PROJECT]) == ("rain", "rain")
    assert (span.attributes[SOURCE], span.attributes[TL_SOURCE]) == ("staging", "staging")


def test_a_span_naming_no_event_type_is_a_model_call() -> None:
    made, finished = provider()
    token = otel_context.attach(with_session(Session("conv-8")))
    try:  # the session of the current context, as an instrumentor's span finds it
        made.get_tracer("openinference.instrumentation.openai").start_span(
            "ChatCompletion", attributes={"llm.model_name": "m"}
        ).end()
    finally:
        otel_context.detach(token)
    (span,) = finished
    assert list(span.attributes) == ["llm.model_name", *STAMP_KEYS, EVENT_TYPE]
    assert span.attributes[EVENT_TYPE] == "model"
    assert span.attributes[SESSION_ID] == "conv-8"


def test_outside_a_request_each_span_gets_a_session_of_its_own() -> None:
    made, finished = provider()
    tracer = made.get_tracer("x")
    tracer.start_span("a").end()
    tracer.start_span("b").end()
    first, second = (span.attributes[SESSION_ID] for span in finished)
    assert first and second and first != second


def test_what_the_delegate_drops_is_not_recorded_nor_stamped() -> None:
    made, finished = provider()
    unsampled = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(0))
    parent = trace.set_span_in_context(NonRecordingSpan(unsampled))
    span = made.get_tracer("llm_router").start_span("route r", parent)
    assert not span.is_recording()
    span.end()
    made, finished = provider(ALWAYS_OFF)
    made.get_tracer("llm_router").start_span("route r").end()
    assert finished == []


def test_the_default_is_the_sdks_choice(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    assert default_sampler().get_description() == ParentBased(ALWAYS_ON_SAMPLER).get_description()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert default_sampler().get_description() == ALWAYS_OFF.get_description()
    sampler = StampSampler("p", "s", default_sampler())
    assert ALWAYS_OFF.get_description() in sampler.get_description()


def _parents() -> list:
    state = TraceState([("vendor", "v1")])
    return [
        None,  # a root span
        SpanContext(5, 6, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        SpanContext(5, 6, is_remote=True, trace_flags=TraceFlags(1), trace_state=state),
        SpanContext(5, 6, is_remote=True, trace_flags=TraceFlags(0), trace_state=state),
        SpanContext(5, 6, is_remote=False, trace_flags=TraceFlags(0)),
        SpanContext(0, 0, is_remote=False),  # invalid: a root again
    ]


def test_the_default_sampler_decides_as_the_sdks_without_being_called(monkeypatch) -> None:
    """With the SDK's default sampler the stamp works its decision out itself (one parent
    lookup instead of three), for every kind of parent the same as the SDK's own; the SDK
    sampler is asked only about a parent that is not sampled."""
    stamp = StampSampler("rain", "staging", default_sampler())
    assert stamp.delegate is DEFAULT_ON
    session = with_session(Session("conv-9"))
    expected = []
    for parent in _parents():
        ctx = (
            session
            if parent is None
            else trace.set_span_in_context(NonRecordingSpan(parent), session)
        )
        expected.append((ctx, DEFAULT_ON.should_sample(ctx, 5, "s", None, {"a": 1})))
    asked = []
    real = type(DEFAULT_ON).should_sample
    monkeypatch.setattr(
        DEFAULT_ON, "should_sample", lambda *a, **k: asked.append(1) or real(DEFAULT_ON, *a, **k)
    )
    for ctx, sdk in expected:
        mine = stamp.should_sample(ctx, 5, "s", None, {"a": 1})
        assert mine.decision is sdk.decision
        assert mine.trace_state == sdk.trace_state
        if sdk.decision.is_recording():
            assert list(mine.attributes)[:1] == ["a"] and mine.attributes[SESSION_ID] == "conv-9"
        else:
            assert dict(mine.attributes) == dict(sdk.attributes)
    assert len(asked) == 2  # the two parents not sampled
