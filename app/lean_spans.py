"""The OpenTelemetry SDK's tracer and span, their attributes stored for less where that changes
nothing that is exported.

The SDK cleans every attribute a span is given, at start and on every `set_attribute(s)`: a
validating call per key and value, then one per key to store it, under two locks (~8k
instructions an attribute). Every span of a traced request pays it: ours take ~13 attributes
each, and OpenInference's span of a provider call sets some twenty, each twice (once for the
sampler at start, then through its masking wrapper).

Plain values (strings, booleans, ints and floats under non-empty string keys; at start, lists of
strings too, which cleaning turns into tuples) are given back by cleaning as they are. So where
nothing else could change them — the SDK's own tracer and span, no limit on a string's length,
room left under the count limit, a span still recording — `LeanTracer` makes a span exactly as
`Tracer.start_span` makes it (ids, sampling, trace flags and state, parent, processors, metrics)
with its first attributes handed over clean, and `LeanSpan` stores plain attributes as
`set_attribute(s)` stores them: a key already there moves to the end with its new value.
Anything else (another value type, a length limit, a full span, an ended one) takes the SDK's
own path, which cleans, truncates, drops, counts and warns as it always does. Spans are made the
lean way only by `LeanTracerProvider`'s tracers, and only while the SDK's `_Span` is built with
the arguments it is built with here; an SDK release that changes that makes every span the SDK's
way rather than failing a request.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider, _Span
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    get_current_span,
)
from opentelemetry.util import types

_PLAIN = frozenset((str, bool, int, float))


class LeanSpan(_Span):
    """The SDK's span; plain attributes stored without the per-attribute cleaning.

    Every write to a span's attributes happens in these methods, under the span's lock; the
    attributes' own lock, which the SDK takes inside it, guards nothing more."""

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if type(value) in _PLAIN and type(key) is str and key:
            stored = self._attributes
            if type(stored) is BoundedAttributes and stored.max_value_len is None:
                with self._lock:
                    if self._end_time is None and not stored._immutable:
                        items = stored._dict
                        if key in items:  # moves to the end, as the SDK moves it
                            del items[key]
                            items[key] = value
                            return
                        if stored.maxlen is None or len(items) < stored.maxlen:
                            items[key] = value
                            return
        super().set_attribute(key, value)  # cleans, truncates, drops, counts, warns

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        stored = self._attributes
        if type(stored) is BoundedAttributes and stored.max_value_len is None:
            for key, value in attributes.items():
                if type(value) not in _PLAIN or type(key) is not str or not key:
                    break
            else:
                with self._lock:
                    items = stored._dict
                    if (
                        self._end_time is None
                        and not stored._immutable
                        and (stored.maxlen is None or len(items) + len(attributes) <= stored.maxlen)
                    ):
                        for key in attributes:
                            if key in items:
                                del items[key]
                        items.update(attributes)
                        return
        super().set_attributes(attributes)


class LeanTracer(SdkTracer):
    """The SDK's tracer, making `LeanSpan`s with their first attributes clean."""

    def start_span(  # the SDK's signature, which instrumentors call with keywords
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        """`Tracer.start_span`, step for step, but for the span's class and first attributes."""
        links = links or ()
        parent: SpanContext | None = get_current_span(context).get_span_context()
        if parent is not None and not isinstance(parent, SpanContext):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if not self._is_enabled():
            return NonRecordingSpan(context=parent)
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
        else:
            trace_id = parent.trace_id
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        decision = result.decision
        flags = TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT
        random_id = (
            self.id_generator.is_trace_id_random()
            if parent is None
            else parent.trace_flags.random_trace_id
        )
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=result.trace_state,
        )
        end_metrics = self._tracer_metrics.start_span(parent, decision)
        if not decision.is_recording():
            return NonRecordingSpan(context=span_context)
        first = result.attributes
        limits = self._span_limits
        clean = (
            _clean(first)
            if first
            and limits.max_span_attribute_length is None
            and (limits.max_span_attributes is None or len(first) <= limits.max_span_attributes)
            else None
        )
        span = LeanSpan(
            name=name,
            context=span_context,
            parent=parent,
            sampler=self.sampler,
            resource=self.resource,
            attributes=None if clean is not None else first,
            span_processor=self.span_processor,
            kind=kind,
            links=links,
            instrumentation_info=self.instrumentation_info,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
            limits=limits,
            instrumentation_scope=self._instrumentation_scope,
            record_end_metrics=end_metrics,
        )
        if clean:
            span._attributes._dict.update(clean)
        span.start(start_time=start_time, parent_context=context)
        return span


class LeanTracerProvider(TracerProvider):
    """The SDK's tracer provider; its tracers are `LeanTracer`s where `lean` allows."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return lean(super().get_tracer(*args, **kwargs))


def lean(tracer: Any) -> Any:
    """`tracer` as a `LeanTracer` (the same object: only its class changes, as the provider
    keeps and hands out the one it made) if it is the SDK's own with the parts `start_span`
    reads; any other tracer as it is."""
    if type(tracer) is SdkTracer and _SPAN_MADE_AS_KNOWN and _has_parts(tracer):
        tracer.__class__ = LeanTracer
    return tracer


def _has_parts(tracer: SdkTracer) -> bool:
    limits = getattr(tracer, "_span_limits", None)
    return (
        limits is not None
        and hasattr(limits, "max_span_attribute_length")
        and hasattr(limits, "max_span_attributes")
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


def _takes_known_arguments() -> bool:
    """Whether the SDK's `_Span` is built with exactly the arguments `start_span` passes (any
    other must have a default)."""
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
        "record_exception",
        "set_status_on_exception",
        "limits",
        "instrumentation_scope",
        "record_end_metrics",
    }
)
_SPAN_MADE_AS_KNOWN = _takes_known_arguments()
