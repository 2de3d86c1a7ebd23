"""Hot reload (SIGHUP, POST /admin/reload) and graceful shutdown (SIGTERM) on real processes."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.config import load_config
from app.factory import create_app
from tests.fakes.server import serve_app
from tests.procs import Served

ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}
ADMIN = {"authorization": "Bearer admin-secret"}
CALLER = {"authorization": "Bearer caller-key"}


def config(default: str, *, latency_ms: int = 0, more: str = "") -> str:
    return f"""
server:
  api_keys: [caller-key]
  admin_key: admin-secret
  drain_timeout_s: 10
providers:
  sim: {{type: simulated, latency_ms: {latency_ms}, chunk_delay_ms: 100, words: 20}}
models:
  one: {{provider: sim, model: sim-one}}
  two: {{provider: sim, model: sim-two}}
routes:
  default: {default}
{more}"""


def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["value"] = fn()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def routes_of(base: str) -> list[str]:
    return [m["id"] for m in httpx.get(base + "/v1/models", headers=CALLER).json()["data"]]


def test_sighup_and_admin_reload_swap_configs_and_refuse_bad_ones(serve, tmp_path: Path) -> None:
    gw: Served = serve(config("one", latency_ms=1500))
    path = tmp_path / "router.yaml"
    slow, answer = in_background(
        lambda: httpx.post(gw.base + "/v1/chat", json=ASK, headers=CALLER, timeout=30)
    )
    time.sleep(0.3)  # the request is in flight on the old tree
    path.write_text(config("two", more="  extra: one\n"))
    gw.signal(signal.SIGHUP)
    until(lambda: "extra" in routes_of(gw.base))
    slow.join(timeout=10)
    assert answer["value"].json()["target"] == "one"  # finished on the tree it started on
    new = httpx.post(gw.base + "/v1/chat", json=ASK, headers=CALLER, timeout=30).json()
    assert new["target"] == "two"

    # An invalid config: refused with its problems, the running one keeps serving.
    path.write_text(config("nowhere"))
    gw.signal(signal.SIGHUP)
    # The refusal and then each problem are logged: wait for the problem's line itself.
    until(lambda: "routes.default (line 12): unknown route, model alias" in gw.output())
    assert "SIGHUP: the new config is refused (1 problem(s))" in gw.output()
    refused = httpx.post(gw.base + "/admin/reload", headers=ADMIN)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_config"
    assert error["details"]["problems"][0]["path"] == "routes.default"
    assert error["details"]["problems"][0]["line"] == 12
    assert "extra" in routes_of(gw.base)
    assert httpx.post(gw.base + "/admin/reload", headers=CALLER).status_code == 401

    path.write_text(config("one"))
    done = httpx.post(gw.base + "/admin/reload", headers=ADMIN)
    assert done.status_code == 200, done.text
    assert done.json()["routes"] == ["default"] and done.json()["state"] == "memory"
    assert routes_of(gw.base) == ["default", "one", "two"]
    assert "admin-secret" not in gw.output() and "caller-key" not in gw.output()


def test_old_providers_close_only_after_requests_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(config("one", latency_ms=800))
    app = create_app(load_config(path))
    old = app.state.gateway
    closed: list[float] = []
    real_close = old.aclose

    async def recording_close() -> None:
        closed.append(time.monotonic())
        await real_close()

    old.aclose = recording_close
    with serve_app(app) as base:
        slow, answer = in_background(
            lambda: httpx.post(base + "/v1/chat", json=ASK, headers=CALLER, timeout=30)
        )
        time.sleep(0.2)
        path.write_text(config("two"))
        assert httpx.post(base + "/admin/reload", headers=ADMIN).status_code == 200
        assert app.state.gateway is not old
        time.sleep(0.2)
        assert closed == []  # the old gateway still has a request in flight
        slow.join(timeout=10)
        finished = time.monotonic()
        assert answer["value"].json()["target"] == "one"
        until(lambda: bool(closed), timeout=3)
    assert closed[0] <= finished + 0.2


def stream_in_background(base: str) -> tuple[threading.Thread, dict[str, Any], threading.Event]:
    """Start a streamed chat; the event is set once its first delta has arrived."""
    started = threading.Event()

    def run() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        body = {**ASK, "stream": True}
        try:
            with httpx.stream(
                "POST", base + "/v1/chat", json=body, headers=CALLER, timeout=30
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        started.set()
        except httpx.HTTPError:
            events.append({"type": "cut"})
        return events

    thread, result = in_background(run)
    return thread, result, started


def test_sigterm_drains_streams_in_flight_then_exits(serve) -> None:
    gw: Served = serve(config("one"))
    stream, result, started = stream_in_background(gw.base)
    assert started.wait(10)
    sent = time.monotonic()
    gw.signal(signal.SIGTERM)
    until(lambda: httpx.get(gw.base + "/readyz").status_code == 503, timeout=2)
    assert httpx.get(gw.base + "/healthz").status_code == 200
    refused = httpx.post(gw.base + "/v1/chat", json=ASK, headers=CALLER)
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "unavailable"
    assert refused.json()["error"]["code"] == "draining"
    stream.join(timeout=15)
    events = result["value"]
    assert events[-1]["type"] == "end"  # the stream in flight finished whole
    assert len([e for e in events if e["type"] == "delta"]) == 20
    assert gw.wait(timeout=10) in (0, -signal.SIGTERM)
    assert time.monotonic() - sent < 8
    assert "drained: every request in flight has finished" in gw.output()


def test_sigterm_deadline_ends_what_is_still_running(serve) -> None:
    text = config("one").replace("drain_timeout_s: 10", "drain_timeout_s: 0.5")
    text = text.replace("words: 20", "words: 100")  # a 10-second stream
    gw: Served = serve(text)
    stream, result, started = stream_in_background(gw.base)
    assert started.wait(10)
    sent = time.monotonic()
    gw.signal(signal.SIGTERM)
    assert gw.wait(timeout=10) in (0, -signal.SIGTERM)
    assert time.monotonic() - sent < 5
    stream.join(timeout=10)
    assert result["value"][-1]["type"] != "end"
    assert "drain deadline passed with 1 in flight" in gw.output()


def _get_on(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def test_idle_caller_connections_are_kept_for_keep_alive_s(serve) -> None:
    """The server's keep-alive is the config's: a caller's pooled connection outlives the
    caller's own idle expiry only if the gateway keeps it at least that long."""
    gw: Served = serve(config("one").replace("drain_timeout_s: 10", "keep_alive_s: 1"))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    try:
        assert _get_on(conn, "/healthz") == 200
        kept = conn.sock
        time.sleep(0.4)  # idle, within keep_alive_s: the same connection still serves
        assert _get_on(conn, "/healthz") == 200
        assert conn.sock is kept
        time.sleep(2.0)  # idle past it: the gateway has closed its end (uvicorn's own: 5 s)
        kept.settimeout(0.5)
        assert kept.recv(1) == b""
    finally:
        conn.close()
