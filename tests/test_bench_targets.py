"""bench/run.py's target table: the issue's absolute targets, and the same targets scaled to the
machine by the `sdk-raw` reference row (the issue measured that program on its own machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["bench_run"]


def rows(bench, speed: float, gateway: dict[int, float], p99_16: float, added_1: float):
    """`sdk-raw` at `speed` times the issue's figures, and a traced gateway."""
    result = bench.Result
    out = [
        result("sdk-raw", 1, 1400 * speed, 1, 1, 1, 0, added_p50_ms=0.65 / speed),
        result("sdk-raw", 16, 1620 * speed, 10, 12, 14, 0),
    ]
    for conns, rps in gateway.items():
        p99 = p99_16 if conns == 16 else 50.0
        added = added_1 if conns == 1 else None
        out.append(result("gateway-traced", conns, rps, 1, 2, p99, 0, added_p50_ms=added))
    return out


def table(bench, results) -> dict[str, tuple[str, bool | None]]:
    return {target: (shown, met) for target, shown, met in bench.targets(results)}


def test_on_the_issues_machine_the_scaled_targets_are_the_issues(bench):
    results = rows(bench, 1.0, {1: 900, 16: 1000, 64: 1000}, p99_16=30, added_1=0.8)
    found = table(bench, results)
    assert found["(scale) sdk-raw here / in the issue: req/s at 16, added p50 at 1"][0] == (
        "1.00 x / 1.00 x"
    )
    assert found["scaled: traced, req/s at 16 and 64 >= 1,000"] == ("1,000 / 1,000", True)
    assert found["scaled: traced, added p50 ms at 1 connection <= 0.80"] == ("0.80", True)
    assert found["scaled: traced, p99 ms at 16 connections <= 30"] == ("30", True)
    # ... and agree with the absolute ones
    assert found["traced, req/s at 16 and 64 connections >= 1,000"][1] is True


def test_a_machine_a_quarter_as_fast_scales_every_target(bench):
    results = rows(bench, 0.25, {1: 300, 16: 260, 64: 240}, p99_16=110, added_1=3.0)
    found = table(bench, results)
    assert found["scaled: traced, req/s at 16 and 64 >= 250"] == ("260 / 240", False)
    assert found["scaled: traced, added p50 ms at 1 connection <= 3.20"] == ("3.00", True)
    assert found["scaled: traced, p99 ms at 16 connections <= 120"] == ("110", True)
    assert found["traced, req/s at 16 and 64 connections >= 1,000"][1] is False  # still shown
    assert found["scaled: streaming (traced), streams/s at 16 >= 200"] == ("not measured", None)


def test_without_the_reference_row_nothing_is_scaled(bench):
    results = [bench.Result("gateway-traced", 16, 500, 1, 2, 3, 0)]
    found = table(bench, results)
    assert found["targets scaled to this machine (needs sdk-raw at 1 and 16)"] == (
        "not measured",
        None,
    )
