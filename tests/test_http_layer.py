"""The gateway's own HTTP layer: what it adds to every request, and what it leaves out."""

from __future__ import annotations

from collections.abc import Iterator

import opentelemetry.trace
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config import parse_config
from app.factory import create_app

SIM = """
server:
  max_header_bytes: 2048
  max_body_bytes: 4096
providers:
  sim: {type: simulated}
models:
  fast: {provider: sim, model: sim-fast}
routes:
  default: fast
"""

ASK = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def app() -> Iterator[FastAPI]:
    yield create_app(parse_config(SIM, source="<test>"))


def test_fastapi_adds_no_spans_of_its_own(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    # A process-wide provider (set by an operator's auto-instrumentation, say) must not make
    # FastAPI trace each request beside the gateway's own request spans.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(opentelemetry.trace, "get_tracer_provider", lambda: provider)
    with TestClient(app) as client:
        assert client.post("/v1/chat", json=ASK).status_code == 200
        assert client.get("/healthz").status_code == 200
    assert exporter.get_finished_spans() == ()


def test_draining_refuses_before_the_limits(app: FastAPI) -> None:
    with TestClient(app) as client:
        app.state.draining = True
        huge = {"x-pad": "v" * 4000}
        refused = client.post("/v1/chat", json=ASK, headers=huge)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        # Probes are answered while draining, and held to the limits like any request.
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers=huge).status_code == 431
        app.state.draining = False


def test_limits_and_in_flight_count(app: FastAPI) -> None:
    with TestClient(app) as client:
        over = client.post("/v1/chat", json=ASK, headers={"x-pad": "v" * 4000})
        assert (over.status_code, over.json()["error"]["code"]) == (431, "headers_too_large")
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        assert client.post("/v1/chat", json=big).status_code == 413
        chunked = client.post(
            "/v1/chat",
            content=iter([b'{"messages": [{"role": "user", "content": "', b"x" * 5000, b'"}]}']),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        assert client.post("/v1/chat", json=ASK).status_code == 200
        # Refused or answered, each request has left the in-flight count.
        assert app.state.inflight.count() == 0


@pytest.mark.parametrize(
    "content",
    [
        {"a": [1, 2.5, None, True, False], "b": {"c": 'é ✓ \u2028 "q" \\ </'}, "d": []},
        {"big": 2**70},  # past orjson's 64 bits: the stdlib renders it
        {1: "a key that is not a string"},  # the same
        "plain",
    ],
)
def test_json_body_is_the_json_starlette_renders(content: object) -> None:
    from fastapi.responses import JSONResponse

    from routers.common import JSONBody

    assert JSONBody(content).body == JSONResponse(content).body


def test_uuid4_hex_is_a_random_version_4_uuid() -> None:
    import uuid

    from routers.common import uuid4_hex

    seen = {uuid4_hex() for _ in range(2000)}
    assert len(seen) == 2000
    for text in seen:
        parsed = uuid.UUID(hex=text)
        assert (parsed.hex, parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_one_middleware_spans_records_and_limits_each_request(app: FastAPI) -> None:
    # The span, the record and the limits are one layer (app/edge.py): each response carries
    # exactly one x-trace-id, a refusal is not recorded, an answered request is, once.
    from app.edge import Edge

    assert [m.cls for m in app.user_middleware] == [Edge]
    with TestClient(app) as client:
        recent = app.state.telemetry.recent
        over = client.post("/v1/chat", json=ASK, headers={"x-pad": "v" * 4000})
        assert over.status_code == 431
        assert len(over.headers.get_list("x-trace-id")) == 1
        answered = client.post("/v1/chat", json=ASK)
        assert answered.status_code == 200
        assert len(answered.headers.get_list("x-trace-id")) == 1
        records = recent.latest()
        assert len(records) == 1
        assert (records[0].status, records[0].trace_id) == ("200", answered.headers["x-trace-id"])


def test_chat_requests_after_the_first_skip_routing_and_answer_alike(app: FastAPI) -> None:
    from routers.direct import Shortcuts

    unknown = {"model": "nope", **ASK}
    with TestClient(app) as client:
        first = [
            client.post("/v1/chat/completions", json=b)
            for b in ({"model": "default", **ASK}, unknown)
        ]
        layer = app.middleware_stack
        while not isinstance(layer, Shortcuts):
            layer = layer.app  # type: ignore[union-attr]
        assert [key[2] for key in layer._known] == ["/v1/chat/completions"]
        again = [
            client.post("/v1/chat/completions", json=b)
            for b in ({"model": "default", **ASK}, unknown)
        ]
    assert [r.status_code for r in first] == [r.status_code for r in again] == [200, 404]
    assert first[1].json() == again[1].json()
    assert first[0].json()["choices"] == again[0].json()["choices"]
    assert all(len(r.headers.get_list("x-trace-id")) == 1 for r in first + again)


def _layers(app: FastAPI) -> list[str]:
    names, layer = [], app.middleware_stack
    while layer is not None and layer is not app.router:
        names.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    return names


def test_fastapi_layers_with_nothing_to_do_are_left_out(app: FastAPI) -> None:
    from app.stack import NO_TELEMETRY, GatewayApp

    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/models").status_code == 200
    assert "ExceptionTelemetryMiddleware" not in _layers(app)
    assert "AppBodyLimitMiddleware" not in _layers(app)
    assert _layers(app)[:2] == ["ServerErrorMiddleware", "Edge"]
    # Kept where they have something to do: FastAPI's telemetry on, or a FastAPI body limit.
    for kwargs in ({}, {"telemetry": NO_TELEMETRY, "max_body_size": 10}):
        other = GatewayApp(**kwargs)
        with TestClient(other) as client:
            client.get("/nothing")
        kept = _layers(other)
        wanted = "AppBodyLimitMiddleware" if kwargs else "ExceptionTelemetryMiddleware"
        assert wanted in kept


def test_a_body_over_fastapis_own_limit_is_still_refused() -> None:
    from app.stack import NO_TELEMETRY, GatewayApp

    limited = GatewayApp(telemetry=NO_TELEMETRY, max_body_size=10)

    @limited.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    with TestClient(limited) as client:
        assert client.post("/echo", content=b"x" * 5).json() == {"size": 5}
        assert client.post("/echo", content=b"x" * 50).status_code == 413


def test_an_unexpected_error_is_a_500_in_specs_shape(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str) -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(app.state.gateway, "node_for", broken)
        for _ in range(2):  # routed, then through the shortcut
            answer = client.post("/v1/chat/completions", json={"model": "default", **ASK})
            assert answer.status_code == 500
            assert answer.json()["error"]["type"] == "internal"
        assert app.state.inflight.count() == 0
