"""Soak, bounded for CI (about 15 s of mixed traffic; bench/soak.py runs as long as asked):
memory flat after warm-up, file descriptors and tasks not creeping. And the harness itself is
shown to see a leak: the same run with a middleware that keeps 16 KB a request fails it."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.soak import SoakReport, run_soak

# Its bounds (requests served, latency) are measured: nothing else may run meanwhile.
pytestmark = pytest.mark.alone

MB = 1024 * 1024
MAX_GROWTH = 3 * MB  # the fitted trend over the measured window
MAX_BYTES_PER_REQUEST = 1024  # a leak of a few objects a request shows far above it


def flat(report: SoakReport) -> list[str]:
    """Why the run is not flat, if it is not."""
    problems = []
    if report.rss_growth() > MAX_GROWTH:
        problems.append(f"RSS trend +{report.rss_growth() / MB:.1f} MB over the window")
    if report.rss_slope() > MAX_BYTES_PER_REQUEST:
        problems.append(f"RSS grows {report.rss_slope():.0f} bytes a request")
    fds = [s.fds for s in report.measured]
    if max(fds) - min(fds) > 4:
        problems.append(f"open fds moved from {min(fds)} to {max(fds)}")
    before, after = report.idle_tasks
    if after > before + 1:
        problems.append(f"{after - before} asyncio tasks left behind after the traffic")
    return problems


@pytest.fixture(scope="module")
def report() -> SoakReport:
    return run_soak(15, warmup_share=0.5)


def test_memory_fds_and_tasks_are_flat_after_warmup(report: SoakReport) -> None:
    summary = report.summary()
    assert flat(report) == [], summary
    assert summary["requests"] > 1000, summary


def test_the_soak_traffic_was_served(report: SoakReport) -> None:
    # Faults are simulated behind a failover with a retry: callers see answers or typed errors.
    assert set(report.statuses) <= {200, 429, 502, 529}, report.statuses
    assert report.statuses.get(200, 0) > 0.95 * sum(report.statuses.values())


class Leaky:
    """Keeps 16 KB of every request forever: what the soak exists to catch."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.kept: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.kept.append(bytearray(16 * 1024))
        await self.app(scope, receive, send)


def test_the_harness_catches_a_leak() -> None:
    leaky = run_soak(5, wrap=Leaky)
    assert any("bytes a request" in p for p in flat(leaky)), leaky.summary()
