"""GC pause timing: each collection lands in the histogram under its generation."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from app.gcstats import YOUNG_THRESHOLD, GcPauses, serving_gc


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


def test_serving_freezes_start_up_and_collects_the_young_less_often() -> None:
    keep = [[] for _ in range(1000)]  # start-up's objects, as long-lived as the process
    before = gc.get_threshold()
    with serving_gc():
        assert gc.get_freeze_count() >= len(keep)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert before[0] < YOUNG_THRESHOLD
    assert gc.get_threshold() == before


def test_the_app_serves_with_the_serving_thresholds() -> None:
    from fastapi.testclient import TestClient

    from app.config import parse_config
    from app.factory import create_app

    config = parse_config(
        "providers: {sim: {type: simulated}}\nmodels: {m: {provider: sim, model: m}}\n"
        "routes: {default: m}\n",
        env={},
    )
    app = create_app(config)
    before = gc.get_threshold()
    with TestClient(app):
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_threshold() == before
