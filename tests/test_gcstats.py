"""GC pause timing: each collection lands in the histogram under its generation."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from app.gcstats import GcPauses


def _count(registry: CollectorRegistry, generation: str) -> float:
    value = registry.get_sample_value(
        "llm_router_gc_pause_seconds_count", {"generation": generation}
    )
    return value or 0.0


def test_collections_are_timed_by_generation() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    pauses.install()
    pauses.install()  # once only
    try:
        before = _count(registry, "2")
        gc.collect()
        gc.collect(0)
        assert _count(registry, "2") == before + 1
        assert _count(registry, "0") >= 1
        assert 0 < pauses.longest_s < 5
    finally:
        pauses.uninstall()
    gc.collect()
    assert _count(registry, "2") == before + 1  # uninstalled: no longer observed
