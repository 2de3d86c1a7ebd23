"""The direct OTLP encoder (app/otlp_wire.py) against the OpenTelemetry exporter's own encoder.

Both encodings are decoded with opentelemetry-proto's generated classes and compared as messages:
for any spans the SDK can make, ours must say exactly what the official encoder says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import ExitStack
from types import MappingProxyType

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

from app import otlp_wire
from app.otlp_export import CREDENTIAL_PROVIDER_VARS, SteadySession, WireOTLPSpanExporter
from app.otlp_wire import Encoder
from app.redact import MASK, Redactor
from tests.fakes.otlp_collector import Collector
from tests.fakes.server import serve_app

text = st.text(max_size=40)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False)
scalar = st.one_of(text, st.booleans(), ints, floats)
value = st.one_of(
    scalar,
    st.lists(text, max_size=4).map(tuple),
    st.lists(ints, max_size=4).map(tuple),
    st.lists(floats, max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
)
attributes = st.dictionaries(st.text(min_size=1, max_size=20), value, max_size=8)
ids = st.integers(min_value=1, max_value=2**64 - 1)
times = st.integers(min_value=0, max_value=2**63 - 1)
RESOURCES = [
    Resource.create({"service.name": "llm-router", "honeyhive.project": "rain"}),
    Resource({"k": 1}, schema_url="https://example.test/schema"),
]
SCOPES = [
    InstrumentationScope("llm_router", "1.0"),
    InstrumentationScope("openinference.instrumentation.openai", "0.1", "https://s", {"a": "b"}),
    None,
]


@st.composite
def contexts(draw, *, remote: bool | None = None) -> SpanContext:
    state = draw(st.sampled_from([None, TraceState([("vendor", "v1"), ("x", "y")])]))
    return SpanContext(
        trace_id=draw(st.integers(min_value=1, max_value=2**128 - 1)),
        span_id=draw(ids),
        is_remote=draw(st.booleans()) if remote is None else remote,
        trace_state=state,
    )


@st.composite
def spans(draw) -> ReadableSpan:
    start = draw(times)
    status = draw(
        st.one_of(
            st.just(Status(StatusCode.UNSET)),
            st.just(Status(StatusCode.OK)),
            text.map(lambda d: Status(StatusCode.ERROR, d)),
        )
    )
    return ReadableSpan(
        name=draw(text),
        context=draw(contexts(remote=False)),
        parent=draw(st.one_of(st.none(), contexts())),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(attributes),
        events=draw(
            st.lists(
                st.builds(Event, name=text, attributes=attributes, timestamp=times), max_size=2
            )
        ),
        links=draw(st.lists(st.builds(Link, contexts(), attributes), max_size=2)),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=status,
        start_time=start,
        end_time=draw(st.one_of(st.none(), times)),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


def decoded(data: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(data)
    return message


def canonical(message: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """Resources and scopes in one order (each encoder groups in the order it meets them)."""
    copy = ExportTraceServiceRequest()
    copy.CopyFrom(message)
    for resource_spans in copy.resource_spans:
        scopes = sorted(resource_spans.scope_spans, key=lambda s: s.SerializeToString())
        del resource_spans.scope_spans[:]
        resource_spans.scope_spans.extend(scopes)
    ordered = sorted(copy.resource_spans, key=lambda r: r.resource.SerializeToString())
    del copy.resource_spans[:]
    copy.resource_spans.extend(ordered)
    return copy


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), min_size=1, max_size=6))
def test_same_message_as_the_exporters_own_encoder(batch: list[ReadableSpan]) -> None:
    ours = canonical(decoded(Encoder().encode(batch)))
    theirs = canonical(decoded(encode_spans(batch).SerializeToString()))
    assert ours == theirs


def test_a_reused_encoder_keeps_resources_and_scopes_apart() -> None:
    encoder = Encoder()
    context = SpanContext(1, 2, is_remote=False)
    for resource in RESOURCES:
        for scope in SCOPES:
            batch = [ReadableSpan("s", context, resource=resource, instrumentation_scope=scope)]
            assert decoded(encoder.encode(batch)) == encode_spans(batch)


def test_scrub_masks_every_string_a_span_carries_and_nothing_else() -> None:
    secret = "sk-live-0123456789"
    span = ReadableSpan(
        name=f"call with {secret}",
        context=SpanContext(7, 8, is_remote=False),
        resource=RESOURCES[0],
        attributes={
            "error.message": f"401: bad key {secret}",
            "list": ("ok", f"x{secret}y"),
            "count": 3,
            "ratio": math.pi,
        },
        events=[Event(f"exception {secret}", {"exception.message": secret}, 5)],
        status=Status(StatusCode.ERROR, f"AuthenticationError: {secret}"),
        instrumentation_scope=SCOPES[0],
    )
    data = Encoder(scrub=Redactor([secret])).encode([span])
    assert secret.encode() not in data
    out = decoded(data).resource_spans[0].scope_spans[0].spans[0]
    attrs = {kv.key: kv.value for kv in out.attributes}
    assert out.name == f"call with {MASK}"
    assert attrs["error.message"].string_value == f"401: bad key {MASK}"
    assert [v.string_value for v in attrs["list"].array_value.values] == ["ok", f"x{MASK}y"]
    assert attrs["count"].int_value == 3
    assert attrs["ratio"].double_value == math.pi
    assert out.events[0].name == f"exception {MASK}"
    assert out.events[0].attributes[0].value.string_value == MASK
    assert out.status.message == f"AuthenticationError: {MASK}"


@pytest.mark.parametrize("layout", ["current", "unknown"])
def test_exporter_delivers_to_a_real_receiver(layout: str, stack: ExitStack) -> None:
    """Through the exporter's own HTTP client; or, if an exporter version has none we know, its
    own encoder on scrubbed spans: either way the receiver gets the spans, masked."""
    secret = "hh-secret-key-42"
    span = ReadableSpan(
        name=f"route {secret}",
        context=SpanContext(11, 12, is_remote=False),
        resource=RESOURCES[0],
        attributes={"provider.error": f"bad key {secret}", "attempt.number": 2},
        status=Status(StatusCode.ERROR, secret),
        instrumentation_scope=SCOPES[0],
    )
    collector = Collector()
    url = stack.enter_context(serve_app(collector.app))
    exporter = WireOTLPSpanExporter(
        endpoint=url + "/v1/traces", timeout=2, redactor=Redactor([secret])
    )
    if layout == "unknown":
        exporter._send = None
    assert exporter.export([span]).name == "SUCCESS"
    exporter.shutdown()
    (got,) = collector.wait_for(lambda spans: len(spans) == 1)
    assert got.name == f"route {MASK}"
    assert got.attributes == {"provider.error": f"bad key {MASK}", "attempt.number": 2}
    assert (got.status_code, got.status_message) == (2, MASK)
    assert got.resource["honeyhive.project"] == "rain"
    assert (got.trace_id, got.span_id) == (f"{11:032x}", f"{12:016x}")


def test_exporter_refuses_a_batch_over_its_size_limit(stack: ExitStack) -> None:
    collector = Collector()
    url = stack.enter_context(serve_app(collector.app))
    exporter = WireOTLPSpanExporter(endpoint=url + "/v1/traces", timeout=2, max_request_size=100)
    span = ReadableSpan(
        "big",
        SpanContext(1, 2, is_remote=False),
        resource=Resource({}),
        attributes={"output.value": "x" * 500},
    )
    assert exporter.export([span]).name == "FAILURE"
    small = ReadableSpan("small", SpanContext(1, 3, is_remote=False), resource=Resource({}))
    assert exporter.export([small]).name == "SUCCESS"
    assert [s.name for s in collector.wait_for(lambda spans: len(spans) == 1)] == ["small"]
    exporter.shutdown()


class _PlainMapping(Mapping):
    """A mapping with no `copy()`: the encoder iterates it through the ABC's `items()`."""

    def __init__(self, data: dict) -> None:
        self._data = data

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@settings(max_examples=100, deadline=None)
@given(attributes)
def test_attributes_of_any_mapping_encode_alike(attrs: dict) -> None:
    """A dict, the SDK's BoundedAttributes (through a span's read-only proxy) and a mapping
    without `copy()` (the fallback) give the same bytes, in the attributes' own order."""
    bounded = BoundedAttributes(attributes=attrs, immutable=True)
    expected = otlp_wire._attributes(b"\x4a", _PlainMapping(attrs))
    assert otlp_wire._attributes(b"\x4a", attrs) == expected
    assert otlp_wire._attributes(b"\x4a", MappingProxyType(bounded)) == expected
    assert otlp_wire._attributes(b"\x4a", MappingProxyType(attrs)) == expected


def test_a_finished_sdk_span_encodes_as_the_exporter_does() -> None:
    provider = TracerProvider(resource=RESOURCES[0])
    finished: list[ReadableSpan] = []

    class Keep(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            finished.append(span)

    provider.add_span_processor(Keep())
    span = provider.get_tracer("llm_router", "1").start_span(
        "route default", attributes={"router.route": "default", "routing.candidates": ["a", "b"]}
    )
    span.set_attributes({"routing.hops": 1, "cost.estimated_usd": 0.5, "router.stream": False})
    span.end()
    assert decoded(Encoder().encode(finished)) == encode_spans(finished)


def test_a_reused_encoder_gives_the_same_bytes_as_a_fresh_one(monkeypatch) -> None:
    """The kept (key, value) encodings, scrubbed, never leak between values or secrets, and
    the cache empties itself when full."""
    monkeypatch.setattr(otlp_wire, "_KV_CACHE_MAX", 5)
    secret = "sk-live-0123456789"
    encoder = Encoder(scrub=Redactor([secret]))
    context = SpanContext(1, 2, is_remote=False)
    for round_ in range(3):
        for n in range(8):
            attrs = {
                "a": "same",
                "b": f"value {n}",
                "c": f"key {secret}",
                "d": n,
                "e": str(n),
                "f": "x" * 200,
                "g": True,
                "h": 1 if n % 2 else True,  # equal, and hashed alike: kept apart by type
                "i": n % 3 == 0,
            }
            status = Status(StatusCode.ERROR, f"e {n}") if n % 4 == 3 else Status(StatusCode.OK)
            batch = [
                ReadableSpan(
                    f"s {n % 2} {secret}",
                    context,
                    resource=RESOURCES[0],
                    attributes=attrs,
                    status=status,
                )
            ]
            fresh = Encoder(scrub=Redactor([secret])).encode(batch)
            assert encoder.encode(batch) == fresh, (round_, n)
            assert secret.encode() not in fresh
            assert len(encoder._span_attributes) <= 5


def test_kept_encodings_tell_equal_values_of_other_types_apart() -> None:
    """1 == True == 1.0 and they hash alike, but each is written as its own type."""
    encoder = Encoder()
    context = SpanContext(1, 2, is_remote=False)
    for value in (True, 1, 1.0, False, 0, 0.0, -0.0, 1, True):
        batch = [ReadableSpan("s", context, resource=RESOURCES[0], attributes={"h": value})]
        assert encoder.encode(batch) == Encoder().encode(batch), value
        assert decoded(encoder.encode(batch)) == encode_spans(batch), value


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HTTPS_PROXY": "http://proxy.test:3128", "HTTP_PROXY": "http://proxy.test:3128"},
        {"HTTP_PROXY": "http://proxy.test:3128", "NO_PROXY": "collector.test"},
        {"REQUESTS_CA_BUNDLE": "/etc/ssl/bundle.pem"},
    ],
)
def test_steady_session_settings_are_requests_own(env: dict, monkeypatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plain, steady = requests.Session(), SteadySession()
    for url in ("https://collector.test/v1/traces", "http://collector.test/v1/traces"):
        for verify in (True, False, None):
            expected = plain.merge_environment_settings(url, {}, None, verify, None)
            assert steady.merge_environment_settings(url, {}, None, verify, None) == expected
            assert steady.merge_environment_settings(url, {}, None, verify, None) == expected
    given = {"https": "http://given.test:1"}  # explicit proxies: requests' own path, never kept
    assert steady.merge_environment_settings(
        "https://collector.test/v1/traces", dict(given), None, True, None
    ) == plain.merge_environment_settings(
        "https://collector.test/v1/traces", dict(given), None, True, None
    )


def test_steady_session_reads_the_environment_once_per_url(monkeypatch) -> None:
    calls = []
    real = requests.sessions.get_environ_proxies

    def counting(url: str, no_proxy=None) -> dict:
        calls.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
    steady = SteadySession()
    for _ in range(3):
        settings = steady.merge_environment_settings(
            "http://c.test/v1/traces", {}, None, True, None
        )
        settings["proxies"]["http"] = "mutated by a caller"  # never reaches the kept copy
    assert calls == ["http://c.test/v1/traces"]
    assert (
        "http"
        not in steady.merge_environment_settings("http://c.test/v1/traces", {}, None, True, None)[
            "proxies"
        ]
    )


def test_the_exporter_posts_through_a_steady_session_unless_a_provider_gives_one(
    monkeypatch,
) -> None:
    for name in CREDENTIAL_PROVIDER_VARS:
        monkeypatch.delenv(name, raising=False)
    exporter = WireOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert isinstance(exporter._client._transport._session, SteadySession)
    own = requests.Session()
    exporter = WireOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", session=own)
    assert exporter._client._transport._session is own
