"""Finished spans to OTLP protobuf bytes, written straight to the wire format.

The OTLP exporter's own encoder builds a protobuf object for every span, attribute and value and
then serialises the tree: about 5 µs per attribute here, some 500 µs for the four spans of one
traced request, spent on the export thread and so under the event loop's GIL. Writing the wire
format directly costs a fraction of that, because the resource and scope parts are encoded once
and reused, and attribute keys (the same few dozen names on every span) are encoded once each.

The output decodes to the same `ExportTraceServiceRequest` as `encode_spans(spans)` (the tests
check this, field for field, on generated spans). Field numbers are those of
opentelemetry-proto's `trace/v1/trace.proto` and `common/v1/common.proto`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack

# Span.kind: the proto's values are the SDK's plus one (0 is SPAN_KIND_UNSPECIFIED).
_KIND = {kind: kind.value + 1 for kind in SpanKind}
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200

Scrub = Callable[[str], str] | None  # applied to span names, string attributes, status messages


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value] if value >= 0 else _varint(value + (1 << 64))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


# Tags, as bytes: (field number << 3) | wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
_T1_LEN = b"\x0a"  # field 1, bytes (every message's first field here)
_T2_LEN = b"\x12"
_T3_LEN = b"\x1a"
_T4_LEN = b"\x22"
_T5_LEN = b"\x2a"
_T6_LEN = b"\x32"
_T7_LEN = b"\x3a"
_T2_VARINT = b"\x10"
_T3_VARINT = b"\x18"
_T4_FIXED64 = b"\x21"


def _text(value: str, scrub: Scrub) -> bytes:
    return (scrub(value) if scrub is not None else value).encode("utf-8", "surrogatepass")


def _any_value(value: Any, scrub: Scrub) -> bytes:
    """An AnyValue message's bytes."""
    if isinstance(value, str):
        return _field(_T1_LEN, _text(value, scrub))
    if isinstance(value, bool):
        return _T2_VARINT + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return _T3_VARINT + _varint(value)
    if isinstance(value, float):
        return _T4_FIXED64 + _pack_double(value)
    if isinstance(value, bytes):
        return _field(_T7_LEN, value)
    if value is None:
        return b""
    if isinstance(value, Sequence):  # ArrayValue { repeated AnyValue values = 1; }
        return _field(_T5_LEN, b"".join(_field(_T1_LEN, _any_value(v, scrub)) for v in value))
    if isinstance(value, Mapping):  # KeyValueList { repeated KeyValue values = 1; }
        items = b"".join(_field(_T1_LEN, _key_value(str(k), v, scrub)) for k, v in value.items())
        return _field(_T6_LEN, items)
    raise TypeError(f"attribute value of type {type(value).__name__}")


_KEYS: dict[str, bytes] = {}
_KEYS_MAX = 4096  # a process sees a few hundred attribute names; never grow without bound


def _new_key(key: str) -> bytes:
    """A KeyValue's key field, encoded and kept (callers look in `_KEYS` first)."""
    encoded = _field(_T1_LEN, key.encode("utf-8", "surrogatepass"))
    if len(_KEYS) < _KEYS_MAX:
        _KEYS[key] = encoded
    return encoded


def _key_value(key: str, value: Any, scrub: Scrub) -> bytes:
    """A KeyValue message's bytes: { string key = 1; AnyValue value = 2; }."""
    encoded = _KEYS.get(key) or _new_key(key)
    return encoded + _field(_T2_LEN, _any_value(value, scrub))


def _items(attributes: Mapping[str, Any]) -> Any:
    """The attributes' items, as a dict's where the mapping can give one.

    A finished SDK span hands out its attributes as a read-only proxy over a `BoundedAttributes`,
    a `MutableMapping` whose `items()` is the ABC's: a Python generator calling `__getitem__`
    once per attribute. The proxy's `copy()` calls the mapping's own `copy()`, which for
    `BoundedAttributes` (and a plain dict) is a dict copy made in C. A mapping without one is
    iterated as before.
    """
    try:
        copied = attributes.copy()  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return attributes.items()
    return copied.items() if type(copied) is dict else attributes.items()


_KV_CACHE_MAX = 2048  # (key, value) pairs of short strings kept encoded, per Encoder
_KV_CACHE_LEN = 96  # longer values (prompts, completions, JSON) are rarely repeated


def _attributes(
    tag: bytes,
    attributes: Mapping[str, Any] | None,
    scrub: Scrub = None,
    cache: dict[tuple[str, str], bytes] | None = None,
) -> bytes:
    """Repeated KeyValue fields under `tag`.

    `cache`, when given, keeps the whole field (tag included: one cache serves one tag) of each
    short string attribute, and of each int and bool: most of them (span kinds, event types,
    project, source, route and provider names, attempt numbers, status codes) are the same on
    every request, so each is scrubbed and encoded once. The cache belongs to one Encoder,
    hence to one scrub; it is emptied when full.
    """
    if not attributes:
        return b""
    out = []
    for key, value in _items(attributes):
        if type(value) is str:  # most attributes: the general path, inlined
            short = cache is not None and len(value) <= _KV_CACHE_LEN
            if short:
                hit = cache.get((key, value))  # type: ignore[union-attr]
                if hit is not None:
                    out.append(hit)
                    continue
            encoded = _KEYS.get(key) or _new_key(key)
            text = _text(value, scrub)
            n = len(text)
            any_value = b"\x0a" + (_SMALL[n] if n < 0x80 else _varint(n)) + text
            n = len(any_value)
            kv = encoded + b"\x12" + (_SMALL[n] if n < 0x80 else _varint(n)) + any_value
            n = len(kv)
            field = tag + (_SMALL[n] if n < 0x80 else _varint(n)) + kv
            if short:
                if len(cache) >= _KV_CACHE_MAX:  # type: ignore[arg-type]
                    cache.clear()  # type: ignore[union-attr]
                cache[(key, value)] = field  # type: ignore[index]
            out.append(field)
            continue
        if cache is not None and (type(value) is int or type(value) is bool):
            # Counts, flags, status codes: few values, the same from span to span. The type
            # is part of the key, as True == 1 (floats are not kept: -0.0 == 0.0).
            scalar_key = (key, value, type(value))
            hit = cache.get(scalar_key)  # type: ignore[call-overload]
            if hit is not None:
                out.append(hit)
                continue
            kv = _key_value(key, value, scrub)
            n = len(kv)
            field = tag + (_SMALL[n] if n < 0x80 else _varint(n)) + kv
            if len(cache) >= _KV_CACHE_MAX:
                cache.clear()
            cache[scalar_key] = field  # type: ignore[index]
            out.append(field)
            continue
        kv = _key_value(key, value, scrub)
        n = len(kv)
        out.append(tag + (_SMALL[n] if n < 0x80 else _varint(n)) + kv)
    return b"".join(out)


def _uint(tag: bytes, value: int | None) -> bytes:
    return tag + _varint(value) if value else b""


def _flags(context: SpanContext | None) -> int:
    flags = _FLAGS_HAS_IS_REMOTE
    if context is not None and context.is_remote:
        flags |= _FLAGS_IS_REMOTE
    return flags


# The fields every span has, of which few values occur: written once here.
_KIND_FIELD = {kind: b"\x30" + _SMALL[value] for kind, value in _KIND.items()}
_SPAN_FLAGS = {  # field 16 (fixed32), by whether the parent is remote
    False: b"\x85\x01" + _pack_fixed32(_FLAGS_HAS_IS_REMOTE),
    True: b"\x85\x01" + _pack_fixed32(_FLAGS_HAS_IS_REMOTE | _FLAGS_IS_REMOTE),
}
_NAMES_MAX = 512  # span names kept encoded, per Encoder ("route default", "attempt fast", …)


def _status(status: Any, scrub: Scrub) -> bytes:
    # Status { string message = 2; StatusCode code = 3; }
    body = b""
    if status.description:
        body += _field(_T2_LEN, _text(status.description, scrub))
    body += _uint(_T3_VARINT, status.status_code.value)
    return _field(b"\x7a", body)


_PLAIN_STATUS: dict[Any, bytes] = {}  # status code -> field, for a status without a message


def _span(
    span: ReadableSpan,
    scrub: Scrub,
    cache: dict[tuple[str, str], bytes] | None = None,
    names: dict[str, bytes] | None = None,
) -> bytes:
    """A Span message's bytes (trace/v1/trace.proto); `cache`: see `_attributes`; `names`, when
    given, keeps each span name's field (scrubbed), for one Encoder."""
    context = span.get_span_context()
    parts = [
        _T1_LEN + b"\x10" + context.trace_id.to_bytes(16, "big"),
        _T2_LEN + b"\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
        parts.append(_field(_T3_LEN, state.encode()))
    parent = span.parent
    if parent is not None:
        parts.append(_T4_LEN + b"\x08" + parent.span_id.to_bytes(8, "big"))
    name = span.name
    if name:
        field = names.get(name) if names is not None else None
        if field is None:
            field = _field(_T5_LEN, _text(name, scrub))
            if names is not None and len(names) < _NAMES_MAX:
                names[name] = field
        parts.append(field)
    parts.append(_KIND_FIELD[span.kind])
    if span.start_time:
        parts.append(b"\x39" + _pack_fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _pack_fixed64(span.end_time))
    parts.append(_attributes(b"\x4a", span.attributes, scrub, cache))
    dropped = span.dropped_attributes
    if dropped:
        parts.append(b"\x50" + _varint(dropped))
    for event in span.events:  # Event { fixed64 time = 1; string name = 2; attributes = 3; … }
        body = b"\x09" + _pack_fixed64(event.timestamp) if event.timestamp else b""
        if event.name:
            body += _field(_T2_LEN, _text(event.name, scrub))
        body += _attributes(_T3_LEN, event.attributes, scrub)
        body += _uint(b"\x20", event.dropped_attributes)
        parts.append(_field(b"\x5a", body))
    dropped = span.dropped_events
    if dropped:
        parts.append(b"\x60" + _varint(dropped))
    for link in span.links:  # Link { trace_id = 1; span_id = 2; …; attributes = 4; … flags = 6 }
        body = (
            _T1_LEN
            + b"\x10"
            + link.context.trace_id.to_bytes(16, "big")
            + _T2_LEN
            + b"\x08"
            + link.context.span_id.to_bytes(8, "big")
            + _attributes(_T4_LEN, link.attributes)
            + _uint(b"\x28", link.dropped_attributes)
            + b"\x35"
            + _pack_fixed32(_flags(link.context))
        )
        parts.append(_field(b"\x6a", body))
    dropped = span.dropped_links
    if dropped:
        parts.append(b"\x70" + _varint(dropped))
    status = span.status
    if status is not None:
        if status.description:
            parts.append(_status(status, scrub))
        else:
            field = _PLAIN_STATUS.get(status.status_code)
            if field is None:
                field = _PLAIN_STATUS[status.status_code] = _status(status, scrub)
            parts.append(field)
    parts.append(_SPAN_FLAGS[parent is not None and parent.is_remote])
    return b"".join(parts)


def _resource(resource: Resource) -> bytes:
    # ResourceSpans.resource = 1: Resource { repeated KeyValue attributes = 1; }
    return _field(_T1_LEN, _attributes(_T1_LEN, resource.attributes))


def _scope(scope: InstrumentationScope | None) -> bytes:
    # ScopeSpans.scope = 1: InstrumentationScope { name = 1; version = 2; attributes = 3; }
    if scope is None:
        return _field(_T1_LEN, b"")
    body = b""
    if scope.name:
        body += _field(_T1_LEN, scope.name.encode())
    if scope.version:
        body += _field(_T2_LEN, scope.version.encode())
    body += _attributes(_T3_LEN, scope.attributes)
    return _field(_T1_LEN, body)


class Encoder:
    """Encodes batches of finished spans; keeps the encoded resources and scopes it has seen.

    `scrub`, when given, is applied to every string a span carries (its name, string attribute
    values, event names and attributes, status message) as it is written: the redaction of
    secrets, without building a scrubbed copy of each span first. Resources and scopes, which
    come from configuration and code, are written as they are.
    """

    def __init__(self, scrub: Scrub = None) -> None:
        self.scrub = scrub
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}
        self._span_attributes: dict[tuple[str, str], bytes] = {}  # see `_attributes`
        self._names: dict[str, bytes] = {}  # see `_span`

    def _cached_resource(self, resource: Resource) -> bytes:
        hit = self._resources.get(id(resource))
        if hit is None or hit[0] is not resource:
            hit = (resource, _resource(resource))
            self._resources[id(resource)] = hit
        return hit[1]

    def _cached_scope(self, scope: InstrumentationScope | None) -> bytes:
        hit = self._scopes.get(id(scope))
        if hit is None or hit[0] is not scope:
            hit = (scope, _scope(scope))
            self._scopes[id(scope)] = hit
        return hit[1]

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """An ExportTraceServiceRequest: spans grouped by resource, then by scope."""
        grouped: dict[int, tuple[Resource, dict[int, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            by_scope = grouped.setdefault(id(resource), (resource, {}))[1]
            by_scope.setdefault(id(scope), (scope, []))[1].append(
                _span(span, self.scrub, self._span_attributes, self._names)
            )
        out = []
        for resource, by_scope in grouped.values():
            body = [self._cached_resource(resource)]
            for scope, encoded in by_scope.values():
                scope_spans = self._cached_scope(scope) + b"".join(
                    [_field(_T2_LEN, s) for s in encoded]
                )
                if scope is not None and scope.schema_url:
                    scope_spans += _field(_T3_LEN, scope.schema_url.encode())
                body.append(_field(_T2_LEN, scope_spans))
            if resource.schema_url:
                body.append(_field(_T3_LEN, resource.schema_url.encode()))
            out.append(_field(_T1_LEN, b"".join(body)))
        return b"".join(out)
