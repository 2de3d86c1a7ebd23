"""Traffic over the last minutes, in time buckets, for the console's live charts.

Each finished request adds to the bucket of the moment it ended: one request (an error or
not), its latency, and under the provider and model that answered, its tokens and cost.
Buckets older than the window are dropped as new ones open, so memory is bounded: at most
`span_s / bucket_s` buckets, each with a fixed-size latency sample and at most `max_series`
provider-and-model rows. The report leaves out the bucket still filling, so that the charts'
last point is never a half-counted one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.stats import Reservoir, percentile

OTHER = "(other)"


@dataclass
class ModelTotals:
    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Bucket:
    latencies: Reservoir
    requests: int = 0
    errors: int = 0
    models: dict[tuple[str, str], ModelTotals] = field(default_factory=dict)


class Timeline:
    """Requests, errors, latency percentiles, tokens and cost per provider and model, per
    bucket of `bucket_s` seconds over the last `span_s`. One per app; no locks needed."""

    def __init__(
        self,
        *,
        span_s: float = 300.0,
        bucket_s: float = 2.0,
        sample_size: int = 256,
        max_series: int = 24,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.span_s = span_s
        self.bucket_s = bucket_s
        self.sample_size = sample_size
        self.max_series = max_series
        self._clock = clock
        self._rng = random.Random(seed)
        self._buckets: dict[int, Bucket] = {}

    def add(
        self,
        latency_ms: float,
        ok: bool,
        provider: str | None = None,
        model: str | None = None,
        tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        index = int(self._clock() // self.bucket_s)
        bucket = self._buckets.get(index)
        if bucket is None:
            self._expire(index)
            bucket = self._buckets[index] = Bucket(Reservoir(self.sample_size, self._rng))
        bucket.requests += 1
        bucket.errors += not ok
        bucket.latencies.add(latency_ms)
        if provider:
            key = (provider, model or "")
            if key not in bucket.models and len(bucket.models) >= self.max_series:
                key = (provider, OTHER)
            totals = bucket.models.get(key)
            if totals is None:
                totals = bucket.models[key] = ModelTotals()
            totals.requests += 1
            totals.tokens += tokens
            totals.cost_usd += cost_usd

    def _expire(self, newest: int) -> None:
        oldest = newest - int(self.span_s // self.bucket_s)
        for index in [i for i in self._buckets if i <= oldest]:
            del self._buckets[index]

    def report(self) -> dict[str, Any]:
        """Aligned series, oldest first, one point per finished bucket over the span."""
        current = int(self._clock() // self.bucket_s)
        indices = range(current - int(self.span_s // self.bucket_s), current)
        empty = Bucket(Reservoir(0, self._rng))
        buckets = [self._buckets.get(i, empty) for i in indices]
        keys = sorted({key for bucket in buckets for key in bucket.models})
        ordered = [sorted(b.latencies.values) for b in buckets]
        return {
            "bucket_s": self.bucket_s,
            "t": [i * self.bucket_s for i in indices],
            "rps": [round(b.requests / self.bucket_s, 3) for b in buckets],
            "errors_per_s": [round(b.errors / self.bucket_s, 3) for b in buckets],
            "p50_ms": [percentile(values, 50) for values in ordered],
            "p95_ms": [percentile(values, 95) for values in ordered],
            "models": [
                {
                    "provider": provider,
                    "model": model,
                    "tokens": [_get(b, provider, model).tokens for b in buckets],
                    "cost_usd": [round(_get(b, provider, model).cost_usd, 10) for b in buckets],
                }
                for provider, model in keys
            ],
        }


def _get(bucket: Bucket, provider: str, model: str) -> ModelTotals:
    return bucket.models.get((provider, model)) or ModelTotals()
