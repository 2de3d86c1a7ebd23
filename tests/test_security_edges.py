"""The gateway's edges hold: caller auth cannot be bypassed, admin endpoints refuse callers' keys,
keys are compared in constant time, request size, message count and header limits are enforced,
and the YAML loader cannot be made to execute anything."""

from __future__ import annotations

import hmac
import socket
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import callers as callers_module
from app.callers import Callers
from app.config import ConfigError, ServerConfig, parse_config

KEY = "Caller-Key-0123456789"
ADMIN = "Admin-Key-9876543210"
CONFIG = f"""
server:
  api_keys: ["{KEY}"]
  admin_key: "{ADMIN}"
  max_body_bytes: 65536
  max_messages: 8
  max_header_bytes: 8192
providers:
  sim: {{type: simulated}}
models:
  fast: {{provider: sim, model: sim-fast}}
routes:
  default: fast
"""
ASK = {"messages": [{"role": "user", "content": "hi"}]}
CHAT_PATHS = {
    "/v1/chat": ASK,
    "/v1/chat/completions": {**ASK, "model": "default"},
    "/v1/messages": {**ASK, "model": "default", "max_tokens": 5},
}


@pytest.fixture(scope="module")
def base():
    from contextlib import ExitStack

    from app.factory import create_app
    from tests.fakes.server import serve_app

    with ExitStack() as stack:
        yield stack.enter_context(serve_app(create_app(parse_config(CONFIG, env={}))))


# ---- caller auth ------------------------------------------------------------------------------

REFUSED_HEADERS = [
    {},
    {"authorization": ""},
    {"authorization": "Bearer"},
    {"authorization": KEY},  # no scheme
    {"authorization": f"Basic {KEY}"},
    {"authorization": f"Token {KEY}"},
    {"authorization": f"Bearer{KEY}"},
    {"authorization": f"Bearer {KEY.lower()}"},  # the key is case-sensitive
    {"authorization": f"Bearer {KEY.upper()}"},
    {"authorization": f"Bearer {KEY[:-1]}"},  # a prefix
    {"authorization": f"Bearer {KEY}0"},  # an extension
    {"authorization": f"Bearer {KEY} {KEY}"},
    {"authorization": f"Bearer {ADMIN}"},  # the admin key is not a caller key
    {"authorization": "Bearer " + "k" * 6000},  # very long
    {"x-api-key": ""},
    {"x-api-key": KEY.lower()},
    {"x-api-key": KEY[1:]},
    # A wrong Authorization is not rescued by a right x-api-key: one credential is read.
    {"authorization": "Bearer wrong", "x-api-key": KEY},
]


@pytest.mark.parametrize("headers", REFUSED_HEADERS, ids=range(len(REFUSED_HEADERS)))
@pytest.mark.parametrize("path", list(CHAT_PATHS))
def test_caller_auth_refuses(base: str, path: str, headers: dict[str, str]) -> None:
    response = httpx.post(base + path, json=CHAT_PATHS[path], headers=headers)
    assert response.status_code == 401, response.text
    assert KEY not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},  # the scheme is case-insensitive (RFC 9110)
        {"authorization": f"BEARER {KEY}"},
        {"x-api-key": KEY},
    ],
)
def test_caller_auth_accepts_the_key(base: str, headers: dict[str, str]) -> None:
    for path, body in CHAT_PATHS.items():
        assert httpx.post(base + path, json=body, headers=headers).status_code == 200


def _raw(base: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would (non-ASCII header values); the status line back."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(65536).split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {KEY}\u00e9".encode(),  # the key and a Latin-1 byte
        "Bearer ключ".encode(),  # UTF-8 bytes in a header
        f"Bearer {KEY}".encode().replace(b"0", b"\xd0\x9e"),  # a look-alike letter
        b"Bearer " + KEY.encode() + b"\x00",
        b"Bearer ",
        b"Bearer    \t",
    ],
    ids=["latin1", "cyrillic", "look-alike", "nul", "empty", "blank"],
)
def test_unicode_and_binary_keys_are_refused(base: str, value: bytes) -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    request = (
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: " + value + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )
    status = _raw(base, request)
    assert status.split(b" ")[1] in (b"400", b"401"), status  # the server or the gateway
    assert httpx.get(base + "/healthz").status_code == 200


def test_keys_are_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time is hmac.compare_digest's job, over every key, whichever matches."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(callers_module.hmac, "compare_digest", spy)
    server = ServerConfig.model_validate(
        {"api_keys": ["k-one", "k-two", "k-three"], "admin_key": "adm"}
    )
    callers = Callers(server)
    assert callers.identify("k-one") is not None
    assert len(compared) == 3  # not stopping at the first match
    compared.clear()
    assert callers.identify("nope") is None
    assert len(compared) == 3
    assert all(len(a) == len(b) == 32 for a, b in compared)  # digests: length says nothing
    compared.clear()
    assert callers.is_admin("adm") and not callers.is_admin("k-one")
    assert len(compared) == 2


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=64))
def test_no_other_string_is_a_caller(guess: str) -> None:
    callers = Callers(ServerConfig.model_validate({"api_keys": [KEY]}))
    assert (callers.identify(guess) is not None) == (guess == KEY)


# ---- admin ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}, {"authorization": "Bearer x"}],
)
def test_admin_refuses_callers(base: str, headers: dict[str, str]) -> None:
    response = httpx.post(base + "/admin/reload", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication"


def test_admin_takes_the_admin_key(base: str) -> None:
    response = httpx.post(base + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code != 401  # refused for another reason: the config has no file


# ---- limits -----------------------------------------------------------------------------------

AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize("path", list(CHAT_PATHS))
def test_too_many_messages_is_413(base: str, path: str) -> None:
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}] * 4
    fits = {**CHAT_PATHS[path], "messages": [*turns[:-1]]}
    over = {**CHAT_PATHS[path], "messages": [*turns, {"role": "user", "content": "hi"}]}
    assert httpx.post(base + path, json=fits, headers=AUTH).status_code == 200
    response = httpx.post(base + path, json=over, headers=AUTH)
    assert response.status_code == 413, response.text
    assert "9 messages" in response.text


@pytest.mark.parametrize("path", list(CHAT_PATHS))
def test_a_body_over_the_limit_is_413(base: str, path: str) -> None:
    body = {**CHAT_PATHS[path], "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert httpx.post(base + path, json=body, headers=AUTH).status_code == 413


def test_headers_over_the_limit_are_431(base: str) -> None:
    many = {f"x-pad-{i}": "v" * 100 for i in range(100)}  # about 11 KB
    response = httpx.post(base + "/v1/chat", json=ASK, headers={**AUTH, **many})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"
    one = {"x-pad": "v" * 9000}
    assert httpx.post(base + "/v1/chat", json=ASK, headers={**AUTH, **one}).status_code == 431
    assert httpx.post(base + "/v1/chat", json=ASK, headers=AUTH).status_code == 200


def test_a_huge_header_does_not_take_the_server_down(base: str) -> None:
    try:
        response = httpx.get(base + "/v1/models", headers={**AUTH, "x-pad": "v" * 2_000_000})
        assert response.status_code in (400, 431)
    except httpx.TransportError:
        pass  # the HTTP server may simply close the connection
    assert httpx.get(base + "/healthz").status_code == 200


# ---- the YAML loader --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/apply:subprocess.call [['touch', '{marker}']]",
        "!!python/object/new:os.system ['touch {marker}']",
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/object:pathlib.Path {{}}",
    ],
)
def test_the_yaml_loader_executes_nothing(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "executed"
    for text in (
        payload.format(marker=marker),
        f"server: {payload.format(marker=marker)}",
        f"providers:\n  sim: {{type: simulated, seed: {payload.format(marker=marker)}}}",
    ):
        with pytest.raises(ConfigError):
            parse_config(text, env={})
    assert not marker.exists()


def test_an_alias_bomb_is_refused_not_expanded() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        refs = ", ".join(f"*a{i - 1}" for _ in range(9))
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("server: {api_keys: *a8}")
    with pytest.raises(ConfigError):
        parse_config("\n".join(lines), env={})


def test_interpolation_reads_variables_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    text = f'server: {{api_keys: ["$(touch {marker})", "`touch {marker}`", "${{HOME:-x}}"]}}'
    config = parse_config(text, env={})
    keys = config.server.caller_keys()
    assert keys[:2] == [f"$(touch {marker})", f"`touch {marker}`"] and keys[2] == "x"
    assert not marker.exists()
