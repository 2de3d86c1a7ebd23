"""`llm-router serve` as a real subprocess: zero-config on the simulated provider."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

BIN = Path(sys.executable).parent / "llm-router"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not become ready")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def clean_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "ROUTER_CONFIG"
    }
    return env


def test_zero_config_serves_the_simulated_provider() -> None:
    proc, base = start([], clean_env())
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        response = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hello"}]
        )
        assert response.choices[0].message.content
        assert response.model == "sim-fast"
        chat = httpx.post(
            base + "/v1/chat", json={"messages": [{"role": "user", "content": "hello"}]}
        ).json()
        assert chat["provider"] == "sim" and chat["cost_usd"] > 0
        assert [m.id for m in client.models.list()] == ["default", "sim-fast", "sim-smart"]
    finally:
        out = stop(proc)
    assert "no provider key found: serving the built-in simulated provider" in out


def test_keys_in_the_environment_are_used_and_never_printed(tmp_path: Path) -> None:
    env = {**clean_env(), "OPENAI_API_KEY": "sk-env-secret-123"}
    proc, base = start([], env)
    try:
        ids = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
        assert ids == ["default", "fast", "smart"]
    finally:
        out = stop(proc)
    assert "provider keys found for: openai" in out
    assert "sk-env-secret-123" not in out


def test_config_from_router_config_variable(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(
        "providers:\n  s: {type: simulated}\nmodels:\n  m: {provider: s, model: x}\n"
        "routes:\n  default: m\n"
    )
    proc, base = start([], {**clean_env(), "ROUTER_CONFIG": str(path)})
    try:
        data = httpx.post(
            base + "/v1/chat", json={"messages": [{"role": "user", "content": "hi"}]}
        ).json()
        assert data["target"] == "m"
    finally:
        stop(proc)


def test_bad_config_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("routes:\n  default: nothing\n")
    result = subprocess.run(
        [str(BIN), "serve", "--config", str(path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "routes.default (line 2): unknown route, model alias" in result.stderr


def test_version() -> None:
    result = subprocess.run([str(BIN), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("llm-router ")


def test_access_log_where_the_level_shows_it_unless_turned_off() -> None:
    ask = {"messages": [{"role": "user", "content": "hello"}]}
    line = '"POST /v1/chat HTTP/1.1" 200'
    for args, logged in (([], True), (["--no-access-log"], False)):
        proc, base = start(args, clean_env())
        try:
            assert httpx.post(base + "/v1/chat", json=ask).status_code == 200
        finally:
            out = stop(proc)
        assert (line in out) is logged, out
