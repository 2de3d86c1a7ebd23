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


def test_rounds_report_each_figure_as_its_median(bench):
    def one_round(rps, p50, p90, p99, errors, rss, cpu, long_gc, raw_rps, raw_rss):
        traced = bench.Result(
            "gateway-traced", 16, rps, p50, p90, p99, errors, rss_mb=rss, cpu_us=cpu,
            long_gc=long_gc, extra={"largest_process_mb": rss},
        )  # fmt: skip
        return [traced, bench.Result("sdk-raw", 16, raw_rps, 16, 18, 60, 0, rss_mb=raw_rss)]

    rounds = [
        one_round(900, 15, 20, 40, 0, 100, 1100, 0, 950, 75),
        one_round(600, 25, 30, 50, 2, 104, 1600, 1, 640, 76),
        one_round(1000, 14, 19, 30, 0, 102, 1000, 0, 1000, 74),
    ]
    merged = {(r.name, r.connections): r for r in bench.median_results(rounds)}
    traced = merged["gateway-traced", 16]
    assert (traced.rps, traced.p50_ms, traced.p90_ms, traced.p99_ms) == (900, 15, 20, 40)
    assert traced.cpu_us == 1100
    assert traced.rss_mb == 104 and traced.extra["largest_process_mb"] == 104  # the largest
    assert traced.long_gc == 1 and traced.errors == 2  # summed: one in any round shows
    assert traced.extra["rps_by_round"] == [900, 600, 1000]
    assert merged["sdk-raw", 16].rps == 950
    assert list(merged) == [("gateway-traced", 16), ("sdk-raw", 16)]  # the rounds' order


def test_one_round_is_reported_as_it_was(bench):
    one = [bench.Result("gateway", 1, 800, 1.0, 1.2, 2.0, 0)]
    assert bench.median_results([one]) is one


def test_with_rounds_a_ratio_is_the_median_of_each_rounds_ratio(bench):
    """Two rows of one round were measured a minute apart; their medians may come from
    different rounds. Here the medians give 2,100 / 1,000 = 2.1, the rounds 1.5, 1.5 and 3.0."""
    result = bench.Result

    def one(gateway: float, two_workers: float) -> list:
        return [result("gateway", c, gateway, 1, 1, 1, 0) for c in (16, 64)] + [
            result("gateway-2w", c, two_workers, 1, 1, 1, 0) for c in (16, 64)
        ]

    rounds = [one(1000, 1500), one(2000, 3000), one(700, 2100)]
    medians = bench.median_results(rounds)
    target = "2 workers >= 1.6x one worker at 16 and 64"
    assert table(bench, medians)[target] == ("2.10 / 2.10 x", True)  # without the rounds
    found = {t: (shown, met) for t, shown, met in bench.targets(medians, rounds)}
    assert found[target] == ("1.50 / 1.50 x", False)
