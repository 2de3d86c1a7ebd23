"""`GET /v1/stats`: per provider-and-model performance, since start and over a recent window.

Every upstream attempt is one sample: its latency, whether it failed, and for the attempt that
answered, the tokens and cost. Memory is bounded whatever the traffic: counts, sums, minimum and
maximum are exact; percentiles come from a fixed-size uniform sample (since start) and from the
most recent samples inside the window (recent). Recording is a few additions and no allocation
beyond one small tuple, cheap enough for every request.

Numbers are per process: with several workers each keeps its own (`/metrics` adds them up).
"""

from __future__ import annotations

import math
import random
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One attempt at one provider and model."""

    provider: str
    model: str
    latency_ms: float
    ok: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Totals:
    """Exact aggregates: everything but percentiles."""

    requests: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    latency_min_ms: float = math.inf
    latency_max_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, sample: Sample) -> None:
        self.requests += 1
        self.errors += not sample.ok
        self.latency_sum_ms += sample.latency_ms
        self.latency_min_ms = min(self.latency_min_ms, sample.latency_ms)
        self.latency_max_ms = max(self.latency_max_ms, sample.latency_ms)
        self.input_tokens += sample.input_tokens
        self.output_tokens += sample.output_tokens
        self.cost_usd += sample.cost_usd

    def merge(self, other: Totals) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_sum_ms += other.latency_sum_ms
        self.latency_min_ms = min(self.latency_min_ms, other.latency_min_ms)
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms)
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd

    def report(self, latencies: Iterable[float]) -> dict[str, Any]:
        """The JSON block; `latencies` is the sample the percentiles are read from."""
        ordered = sorted(latencies)
        empty = self.requests == 0
        return {
            "requests": self.requests,
            "errors": self.errors,
            "success_rate": None if empty else round(1 - self.errors / self.requests, 4),
            "latency_ms": {
                "avg": None if empty else round(self.latency_sum_ms / self.requests, 1),
                "min": None if empty else round(self.latency_min_ms, 1),
                "max": None if empty else round(self.latency_max_ms, 1),
                "p50": percentile(ordered, 50),
                "p95": percentile(ordered, 95),
            },
            "tokens": {
                "input": self.input_tokens,
                "output": self.output_tokens,
                "total": self.input_tokens + self.output_tokens,
            },
            "cost_usd": round(self.cost_usd, 10),
        }


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an already sorted list; None when it is empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return round(ordered[rank - 1], 1)


class Reservoir:
    """A uniform sample of at most `size` values from a stream of any length (Algorithm R).

    The values are packed doubles (8 bytes each, not a 24-byte float object and a list slot):
    the console's timeline keeps one of these per 2-second bucket over 5 minutes."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.seen = 0
        self.values: array[float] = array("d")
        self._rng = rng

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value


@dataclass
class Series:
    """One provider and model: totals since start, time buckets for the window, samples."""

    since_start: Totals
    reservoir: Reservoir
    buckets: dict[int, Totals] = field(default_factory=dict)  # bucket index -> totals
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (at, latency_ms)


class Stats:
    """The per provider-and-model report. One per app; single event loop, so no locks."""

    def __init__(
        self,
        *,
        window_s: float = 300.0,
        bucket_s: float = 10.0,
        reservoir_size: int = 1024,
        recent_size: int = 2048,
        max_series: int = 512,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.reservoir_size = reservoir_size
        self.recent_size = recent_size
        self.max_series = max_series
        self._clock = clock
        self._rng = random.Random(seed)
        self._series: dict[tuple[str, str], Series] = {}
        self.started = clock()
        self.started_at = time.time()

    def _series_for(self, provider: str, model: str) -> Series:
        key = (provider, model)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                # A caller naming ever new provider/model-ids must not grow memory without end.
                key = (provider, "(other)")
                series = self._series.get(key)
            if series is None:
                series = Series(Totals(), Reservoir(self.reservoir_size, self._rng))
                self._series[key] = series
        return series

    def add(self, sample: Sample) -> None:
        now = self._clock()
        series = self._series_for(sample.provider, sample.model)
        series.since_start.add(sample)
        series.reservoir.add(sample.latency_ms)
        index = int(now // self.bucket_s)
        bucket = series.buckets.get(index)
        if bucket is None:
            self._expire(series, now)
            bucket = series.buckets[index] = Totals()
        bucket.add(sample)
        series.recent.append((now, sample.latency_ms))
        if len(series.recent) > self.recent_size:
            series.recent.popleft()

    def _expire(self, series: Series, now: float) -> None:
        oldest = int((now - self.window_s) // self.bucket_s)
        for index in [i for i in series.buckets if i <= oldest]:
            del series.buckets[index]

    def report(self) -> dict[str, Any]:
        now = self._clock()
        oldest_bucket = int((now - self.window_s) // self.bucket_s)
        cutoff = now - self.window_s
        rows = []
        for (provider, model), series in sorted(self._series.items()):
            recent = Totals()
            for index, bucket in series.buckets.items():
                if index > oldest_bucket:
                    recent.merge(bucket)
            latencies = [latency for at, latency in series.recent if at >= cutoff]
            rows.append(
                {
                    "provider": provider,
                    "model": model,
                    "since_start": series.since_start.report(series.reservoir.values),
                    "recent": recent.report(latencies),
                }
            )
        return {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "uptime_s": round(now - self.started, 1),
            "window_s": self.window_s,
            "models": rows,
        }
