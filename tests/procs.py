"""`llm-router serve` as real subprocesses (replicas), and a Redis for them to share."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent / "llm-router"
REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """One `llm-router serve` process; its output goes to a file (a pipe could fill and stall)."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith("_API_KEY") and k != "ROUTER_CONFIG"
        }
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(config), "--port", str(self.port)],
            env={**base_env, **(env or {})},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> Served:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.output()}")
            try:
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"serve did not become ready: {self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@contextlib.contextmanager
def serving(folder: Path, text: str, names: list[str]) -> Iterator[list[Served]]:
    """Gateway processes on one config, started together (each takes seconds to import)."""
    config = folder / "router.yaml"
    config.write_text(text)
    started: list[Served] = []
    try:
        for name in names:
            started.append(Served(config, folder / f"{name}.log"))
        yield [served.ready() for served in started]
    finally:
        for served in started:
            served.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """`serve(yaml_text)` starts a gateway process on that config (as `tmp/router.yaml`)."""
    with contextlib.ExitStack() as stack:

        def start(text: str) -> Served:
            return stack.enter_context(serving(tmp_path, text, ["gw"]))[0]

        yield start


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the Redis at 127.0.0.1:6379, deleted afterwards.

    Without a Redis the test is skipped, unless CI is set: there it must run."""
    with own_prefix() as prefix:
        yield prefix


@contextlib.contextmanager
def own_prefix() -> Iterator[str]:
    if not redis_available():
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Redis answers at 127.0.0.1:6379")
        pytest.skip("no Redis at 127.0.0.1:6379 (start redis-server to run this test)")
    prefix = f"llm-router-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()
