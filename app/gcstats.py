"""How long the garbage collector holds the process: every collection timed, by generation.

A full collection stops the event loop for as long as it walks the heap; with many long-lived
objects that is where a Python proxy's tail latency comes from. The gateway freezes what start-up
allocated (`gc.freeze()` in the app's lifespan) and keeps per-request garbage low; this histogram
is how to see that it holds under load (`llm_router_gc_pause_seconds`, and any count above the
0.05 bucket is a pause longer than 50 ms).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    def __init__(self, registry: CollectorRegistry) -> None:
        histogram = Histogram(
            "llm_router_gc_pause_seconds",
            "Time each garbage collection held the process, by generation (2: full).",
            ["generation"],
            buckets=BUCKETS,
            registry=registry,
        )
        self._by_generation = [histogram.labels(str(g)) for g in range(3)]
        self._started = 0.0
        self.longest_s = 0.0  # in this process, since install

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        paused = time.perf_counter() - self._started
        self._by_generation[info.get("generation", 2)].observe(paused)
        if paused > self.longest_s:
            self.longest_s = paused

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
