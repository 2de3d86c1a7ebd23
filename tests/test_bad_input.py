"""Every bad input gets SPEC's JSON error with the right status, and the gateway keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest

SIM = """
server:
  max_body_bytes: 4096
providers:
  sim: {type: simulated}
models:
  fast: {provider: sim, model: sim-fast}
routes:
  default: fast
"""

USER = {"role": "user", "content": "hi"}


@pytest.fixture
def base(serve_gateway) -> str:
    return serve_gateway(SIM)


def check_error(response: httpx.Response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    assert "code" in error
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[]",
        b'"just a string"',
        b'{"messages": "hi"}',
        b'{"messages": []}',
        b'{"route": "default"}',
        b'{"messages": [{"role": "wizard", "content": "hi"}]}',
        b'{"messages": [{"role": "user"}]}',
        b'{"messages": [{"role": "tool", "content": "x"}]}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
        b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes please"}',
        b'{"messages": [{"role": "user", "content": "hi"}], "surprise": 1}',
        b'{"messages": [{"role": "user", "content": 42}]}',
    ],
)
def test_malformed_requests_are_400(base: str, content: bytes) -> None:
    response = httpx.post(
        base + "/v1/chat", content=content, headers={"content-type": "application/json"}
    )
    check_error(response, 400, "invalid_request")
    # ...and the gateway still serves.
    assert httpx.post(base + "/v1/chat", json={"messages": [USER]}).status_code == 200


def test_malformed_openai_requests_are_400(base: str) -> None:
    for body in (
        {"messages": [USER]},
        {"model": "fast", "messages": []},
        {"model": "fast", "messages": [USER], "n": 3},
    ):
        check_error(httpx.post(base + "/v1/chat/completions", json=body), 400, "invalid_request")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat", {"messages": [USER]}),
        ("/v1/chat/completions", {"model": "default", "messages": [USER]}),
    ],
)
def test_a_body_declared_as_another_type_is_told_to_be_json(
    base: str, path: str, body: dict
) -> None:
    """`curl -d` sends JSON as a form: refused (as OpenAI refuses it) with a message saying
    why, not a validation message about a body that was never read as JSON."""
    raw = json.dumps(body).encode()
    for declared in ("application/x-www-form-urlencoded", "text/plain; charset=utf-8"):
        response = httpx.post(base + path, content=raw, headers={"content-type": declared})
        error = check_error(response, 400, "invalid_request")
        assert error["code"] == "unsupported_content_type"
        assert "application/json" in error["message"]
        assert declared.split(";")[0] in error["message"]
    for declared in ("application/json", "application/json; charset=utf-8", None):
        headers = {"content-type": declared} if declared else {}
        assert httpx.post(base + path, content=raw, headers=headers).status_code == 200


def test_unknown_route_is_404_with_suggestion(base: str) -> None:
    error = check_error(
        httpx.post(base + "/v1/chat", json={"route": "fsat", "messages": [USER]}), 404, "not_found"
    )
    assert "did you mean 'fast'" in error["message"]
    check_error(
        httpx.post(base + "/v1/chat", json={"route": "nope/model", "messages": [USER]}),
        404,
        "not_found",
    )


def test_unknown_path_and_method_are_json(base: str) -> None:
    check_error(httpx.get(base + "/v2/nothing"), 404, "not_found")
    response = httpx.get(base + "/v1/chat")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request"


def test_body_over_the_limit_is_413(base: str) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 10_000}]}
    check_error(httpx.post(base + "/v1/chat", json=big), 413, "payload_too_large")

    def chunked():  # no Content-Length: counted as it arrives
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    response = httpx.post(
        base + "/v1/chat", content=chunked(), headers={"content-type": "application/json"}
    )
    check_error(response, 413, "payload_too_large")
    assert httpx.post(base + "/v1/chat", json={"messages": [USER]}).status_code == 200


def test_caller_keys_are_enforced(serve_gateway) -> None:
    base = serve_gateway(
        SIM.replace("server:\n", "server:\n  api_keys: ['${K1}', '']\n"), env={"K1": "rk-caller-1"}
    )
    body = {"messages": [USER]}
    missing = check_error(httpx.post(base + "/v1/chat", json=body), 401, "authentication")
    assert missing["code"] == "missing_api_key"
    for header in (
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic rk-caller-1"},
        {"authorization": "bearer RK-CALLER-1"},
        {"x-api-key": "rk-caller-"},
    ):
        response = httpx.post(base + "/v1/chat", json=body, headers=header)
        check_error(response, 401, "authentication")
        assert "rk-caller-1" not in response.text
    for header in ({"authorization": "Bearer rk-caller-1"}, {"x-api-key": "rk-caller-1"}):
        assert httpx.post(base + "/v1/chat", json=body, headers=header).status_code == 200
    # Health stays open for orchestrators.
    assert httpx.get(base + "/healthz").status_code == 200
    assert httpx.get(base + "/readyz").json()["status"] == "ready"
