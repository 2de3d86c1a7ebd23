"""Throughput of the gateway with tracing on against off, on loopback (bounded in time).

Each gateway serves the simulated provider (no upstream latency) through a failover policy, so
every request makes the full span tree: server, route, policy, attempt. "on" exports over
OTLP/HTTP to a local receiver that decodes every span (tests/fakes/otlp_collector.py); "off" is
`exporter: none`. Requests go from a fixed number of concurrent httpx clients for a fixed time.
The gateway, the receiver and the load run in three processes, as they would in production
(in one process they would share one interpreter lock and measure each other).

    .venv/bin/python bench/tracing_overhead.py [--seconds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import parse_config
from app.factory import create_app
from tests.fakes.otlp_collector import Collector
from tests.fakes.server import serve_app

ROUTES = """
providers:
  sim: {type: simulated, latency_ms: 0}
models:
  a: {provider: sim, model: sim-a}
  b: {provider: sim, model: sim-b}
routes:
  default: {failover: [a, b]}
"""
ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}


async def drive(url: str, seconds: float, concurrency: int) -> int:
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                response = await client.post("/v1/chat", json=ASK)
                response.raise_for_status()
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _serve(
    kind: str, tracing: str, urls: multiprocessing.Queue, stop: multiprocessing.Event
) -> None:
    if kind == "collector":
        collector = Collector()
        app = collector.app
    else:
        app = create_app(parse_config(f"tracing: {tracing}\n{ROUTES}", env={}))
    with serve_app(app) as url:
        urls.put(url)
        stop.wait(600)
        if kind == "collector":
            urls.put(len(collector.spans))


class Served:
    """An app served by a child process for the length of a `with` block."""

    def __init__(self, kind: str, tracing: str = "") -> None:
        self.urls: multiprocessing.Queue = multiprocessing.Queue()
        self.stop = multiprocessing.Event()
        self.process = multiprocessing.Process(
            target=_serve, args=(kind, tracing, self.urls, self.stop), daemon=True
        )

    def __enter__(self) -> str:
        self.process.start()
        return self.urls.get(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def result(self) -> object:
        return self.urls.get(timeout=30)


def measure(tracing: str, seconds: float, concurrency: int) -> float:
    served = Served("gateway", tracing)
    with served as url:
        asyncio.run(drive(url, 1.0, concurrency))  # warm up
        count = asyncio.run(drive(url, seconds, concurrency))
    served.process.join(timeout=10)
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternate off/on this many times")
    args = parser.parse_args()
    collector = Served("collector")
    with ExitStack() as stack:
        receiver = stack.enter_context(collector)
        on_config = f'{{exporter: otlp, endpoint: "{receiver}/v1/traces"}}'
        off, on = [], []
        for _ in range(args.rounds):
            off.append(measure("{exporter: none}", args.seconds, args.concurrency))
            on.append(measure(on_config, args.seconds, args.concurrency))
        best_off, best_on = max(off), max(on)
        print(
            f"tracing off: {best_off:8.1f} req/s   (rounds: {', '.join(f'{x:.1f}' for x in off)})"
        )
        print(f"tracing on:  {best_on:8.1f} req/s   (rounds: {', '.join(f'{x:.1f}' for x in on)})")
        print(f"on/off: {best_on / best_off:.1%}")
    print(f"spans the receiver decoded: {collector.result()}")


if __name__ == "__main__":
    main()
