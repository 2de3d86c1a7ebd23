"""`GET /v1/stats`: exact counts and sums, percentiles from bounded samples, a sliding window."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable

import httpx
import pytest

from app.stats import Sample, Stats, percentile
from app.timeline import Timeline


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def row(report: dict, provider: str, model: str) -> dict:
    return next(r for r in report["models"] if (r["provider"], r["model"]) == (provider, model))


def test_totals_and_percentiles() -> None:
    stats = Stats(clock=Clock(), seed=1)
    for latency in range(1, 101):  # 1..100 ms, every tenth one failed
        ok = latency % 10 != 0
        stats.add(Sample("p", "m", float(latency), ok, 10 if ok else 0, 5 if ok else 0, 0.01))
    block = row(stats.report(), "p", "m")["since_start"]
    assert block["requests"] == 100 and block["errors"] == 10
    assert block["success_rate"] == 0.9
    assert block["latency_ms"] == {"avg": 50.5, "min": 1.0, "max": 100.0, "p50": 50.0, "p95": 95.0}
    assert block["tokens"] == {"input": 900, "output": 450, "total": 1350}
    assert block["cost_usd"] == pytest.approx(1.0)


def test_recent_window_forgets_old_traffic_but_since_start_keeps_it() -> None:
    clock = Clock()
    stats = Stats(clock=clock, window_s=300, bucket_s=10)
    stats.add(Sample("p", "m", 500.0, False))
    clock.now += 200
    stats.add(Sample("p", "m", 10.0, True, 3, 4, 0.5))
    both = row(stats.report(), "p", "m")
    assert both["recent"]["requests"] == 2
    clock.now += 150  # the first sample is 350 s old, the second 150 s
    report = row(stats.report(), "p", "m")
    assert report["since_start"]["requests"] == 2 and report["since_start"]["errors"] == 1
    recent = report["recent"]
    assert recent["requests"] == 1 and recent["errors"] == 0 and recent["success_rate"] == 1.0
    assert recent["latency_ms"]["max"] == 10.0 and recent["latency_ms"]["p95"] == 10.0
    assert recent["cost_usd"] == 0.5
    clock.now += 400
    idle = row(stats.report(), "p", "m")["recent"]
    assert idle["requests"] == 0 and idle["success_rate"] is None
    assert idle["latency_ms"]["p50"] is None


def test_memory_is_bounded_whatever_the_traffic() -> None:
    clock = Clock()
    stats = Stats(clock=clock, reservoir_size=64, recent_size=128, max_series=3, seed=7)
    for i in range(20_000):
        clock.now += 0.1
        stats.add(Sample("p", f"m{i % 5}", float(i % 1000), True))
    series = stats._series
    assert len(series) <= 3 + 1  # three models, then one "(other)" per provider
    assert ("p", "(other)") in series
    for s in series.values():
        assert len(s.reservoir.values) <= 64
        assert len(s.recent) <= 128
        assert len(s.buckets) <= 300 / 10 + 1
    other = row(stats.report(), "p", "(other)")["since_start"]
    assert other["requests"] == 20_000 * 2 // 5
    # A uniform sample of 0..999 has its median near 500.
    assert 300 < other["latency_ms"]["p50"] < 700


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0


CONFIG = """
providers:
  sim:  {type: simulated, latency_ms: 5}
  down: {type: simulated, latency_ms: 1, error_rate: {server_error: 1.0}}
models:
  good: {provider: sim, model: sim-good, input_price: 1.0, output_price: 2.0}
  bad:  {provider: down, model: sim-bad}
routes:
  default: {failover: [bad, good]}
"""


def test_the_endpoint_reports_what_the_callers_got(serve_gateway: Callable[..., str]) -> None:
    base = serve_gateway(CONFIG)
    hello = {"messages": [{"role": "user", "content": "hello"}]}
    answers = [httpx.post(base + "/v1/chat", json=hello).json() for _ in range(3)]
    report = httpx.get(base + "/v1/stats").json()
    assert report["window_s"] == 300 and isinstance(report["pid"], int)
    bad = row(report, "down", "sim-bad")
    good = row(report, "sim", "sim-good")
    for block in (bad["since_start"], bad["recent"]):
        assert block["requests"] == 3 and block["errors"] == 3 and block["success_rate"] == 0.0
        assert block["tokens"]["total"] == 0 and block["cost_usd"] == 0
    for block in (good["since_start"], good["recent"]):
        assert block["requests"] == 3 and block["errors"] == 0
        assert block["tokens"]["output"] == sum(a["usage"]["output_tokens"] for a in answers)
        assert block["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in answers))
        latency = block["latency_ms"]
        assert 4 <= latency["min"] <= latency["p50"] <= latency["p95"] <= latency["max"]


def test_the_endpoint_asks_for_a_caller_key_when_keys_are_set(
    serve_gateway: Callable[..., str],
) -> None:
    base = serve_gateway('server: {api_keys: ["k1"]}\n' + CONFIG)
    assert httpx.get(base + "/v1/stats").status_code == 401
    assert httpx.get(base + "/v1/stats", headers={"authorization": "Bearer k1"}).status_code == 200


def test_a_full_timeline_is_small() -> None:
    """The console's timeline fills for its first 5 minutes (one latency sample per 2-second
    bucket), which a soak sees as growth: at 500 requests a second it must hold well under a
    megabyte once full (as a list of float objects it held 1.3 MB)."""
    clock = Clock()
    rng = random.Random(3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        timeline = Timeline(clock=clock, seed=1)
        for _ in range(300 * 500):
            clock.now += 1 / 500
            timeline.add(rng.random() * 10, True, "up", "gpt-4o-mini", 30, 0.001)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(timeline._buckets) == 150
    assert held < 0.6 * 2**20
