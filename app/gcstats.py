"""The garbage collector while serving: set up for it, and every collection timed by generation.

A full collection stops the event loop for as long as it walks the heap; with many long-lived
objects that is where a Python proxy's tail latency comes from. While the app serves
(`serving_gc()`, in its lifespan) what start-up allocated is frozen out of the collector's sight,
and young collections run less often, so that a request's objects die before one promotes them.
The gateway keeps per-request cyclic garbage near none; `GcPauses` is how to see that it holds
under load (`llm_router_gc_pause_seconds`; any count above the 0.05 bucket is a pause over 50 ms).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

# CPython collects the young generation every 700 net allocations: many times within one request,
# each promoting the request's live objects to generations that full collections then walk. At
# 10,000 most of a request's objects are freed by reference counting first. bench/instructions.py:
# 3-4 % fewer instructions per request (plain 3.35 -> 3.22 M, stream 4.89 -> 4.69 M); higher
# thresholds gained nothing more. The older generations keep their thresholds.
YOUNG_THRESHOLD = 10_000


@contextlib.contextmanager
def serving_gc() -> Iterator[None]:
    """Freeze what exists now (start-up's SDKs, config, routing trees: as long-lived as the
    process) and raise the young generation's threshold; restored on exit."""
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *older)
    try:
        yield
    finally:
        gc.set_threshold(young, *older)


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
