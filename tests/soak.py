"""The soak: mixed traffic for a while, the gateway's resources sampled, their trend judged.

A gateway serving the simulated provider (with some faults, through a failover route, behind
caller keys, exporting every span over OTLP to a sink) takes a steady mix of streaming and
non-streaming requests on all three chat dialects. Every `interval_s` its process's resident
memory, open file descriptors and asyncio tasks (on the server's own loop) are sampled. After a
warm-up, memory must be flat: the least-squares slope of RSS against requests served, carried
over the whole measured window, stays under a bound; descriptors and tasks must not creep.

Used by tests/test_soak.py (about 20 s) and bench/soak.py (as long as asked).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import parse_config
from app.factory import create_app
from tests.fakes.server import serve_app

KEY = "soak-caller-key"
CONFIG = """
server:
  keys: [{{key: {key}, name: soak, rpm: 1000000}}]
tracing: {{exporter: otlp, endpoint: "{sink}/v1/traces"}}
providers:
  sim: {{type: simulated, error_rate: {{server_error: 0.05, rate_limited: 0.02}}, seed: 3,
        chunk_delay_ms: 0.2}}
models:
  a: {{provider: sim, model: sim-a, input_price: 0.1, output_price: 0.2}}
  b: {{provider: sim, model: sim-b, input_price: 0.3, output_price: 0.4}}
routes:
  default: {{failover: {{chain: [a, b], retries: 1, backoff: {{initial_s: 0, max_s: 0}}}}}}
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class LoopProbe:
    """ASGI wrapper that notes the server's event loop, so its tasks can be counted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def tasks(self) -> int:
        if self.loop is None:
            return 0

        async def count() -> int:
            return len(asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=5)


async def _sink(scope: Scope, receive: Receive, send: Send) -> None:
    """An OTLP endpoint that takes every export and keeps nothing."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/x-protobuf"), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


@dataclass
class Sample:
    at_s: float
    requests: int
    rss: int
    fds: int
    tasks: int


@dataclass
class SoakReport:
    samples: list[Sample]
    warmup: int  # samples before this index are the warm-up
    statuses: dict[int, int] = field(default_factory=dict)
    idle_tasks: tuple[int, int] = (0, 0)  # tasks on the server's loop: before, after

    @property
    def measured(self) -> list[Sample]:
        return self.samples[self.warmup :]

    def rss_slope(self) -> float:
        """Bytes of RSS per request served, by least squares over the measured samples."""
        points = self.measured
        if len(points) < 3:
            return 0.0
        xs = [s.requests for s in points]
        ys = [s.rss for s in points]
        return statistics.linear_regression(xs, ys).slope

    def rss_growth(self) -> float:
        """The trend carried over the measured window: bytes the fitted line rises."""
        points = self.measured
        if len(points) < 3:
            return 0.0
        return self.rss_slope() * (points[-1].requests - points[0].requests)

    def summary(self) -> dict[str, Any]:
        points = self.measured
        mb = 1024 * 1024
        return {
            "seconds": round(self.samples[-1].at_s, 1) if self.samples else 0,
            "requests": self.samples[-1].requests if self.samples else 0,
            "statuses": self.statuses,
            "samples": len(self.samples),
            "rss_mb": {
                "after_warmup": round(points[0].rss / mb, 1) if points else 0,
                "end": round(points[-1].rss / mb, 1) if points else 0,
                "max": round(max(s.rss for s in points) / mb, 1) if points else 0,
                "trend_over_window": round(self.rss_growth() / mb, 2),
                "bytes_per_request": round(self.rss_slope(), 1),
            },
            "fds": {"min": min(s.fds for s in points), "max": max(s.fds for s in points)}
            if points
            else {},
            "tasks": {"min": min(s.tasks for s in points), "max": max(s.tasks for s in points)}
            if points
            else {},
            "idle_tasks_before_after": self.idle_tasks,
        }


_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat", {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}),
    ("/v1/chat", {"messages": [{"role": "user", "content": "Tell a story"}], "stream": True}),
    (
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": "Compare a and b"}]},
    ),
    (
        "/v1/chat/completions",
        {
            "model": "default",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Explain the sky"}],
        },
    ),
    (
        "/v1/messages",
        {"model": "default", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]},
    ),
    (
        "/v1/messages",
        {
            "model": "default",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "Say something"}],
        },
    ),
]


async def _traffic(
    base: str, seconds: float, concurrency: int, counter: list[int], statuses: dict[int, int]
) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:

        async def worker(offset: int) -> None:
            n = offset
            while time.monotonic() < deadline:
                path, body = _BODIES[n % len(_BODIES)]
                async with c.stream("POST", path, json=body) as response:
                    async for _ in response.aiter_bytes():
                        pass
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                counter[0] += 1
                n += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))


def run_soak(
    seconds: float,
    *,
    concurrency: int = 8,
    interval_s: float = 0.5,
    warmup_share: float = 0.3,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> SoakReport:
    """Soak a gateway for `seconds`; `wrap` puts something around the app (the leak test)."""
    with ExitStack() as stack:
        sink = stack.enter_context(serve_app(_sink))
        app: ASGIApp = create_app(parse_config(CONFIG.format(key=KEY, sink=sink), env={}))
        probe = LoopProbe(wrap(app) if wrap else app)
        base = stack.enter_context(serve_app(probe))
        httpx.get(base + "/healthz")
        idle_before = probe.tasks()
        counter = [0]
        statuses: dict[int, int] = {}
        samples: list[Sample] = []
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.wait(interval_s):
                samples.append(
                    Sample(
                        time.monotonic() - started,
                        counter[0],
                        rss_bytes(),
                        open_fds(),
                        probe.tasks(),
                    )
                )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        asyncio.run(_traffic(base, seconds, concurrency, counter, statuses))
        stop.set()
        sampler.join()
        time.sleep(0.5)  # connections close, streams' tasks end
        idle_after = probe.tasks()
    return SoakReport(
        samples, int(len(samples) * warmup_share), statuses, (idle_before, idle_after)
    )
