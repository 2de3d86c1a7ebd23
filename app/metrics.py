"""`GET /metrics`: the gateway's Prometheus metrics, correct with one worker or many.

Each app owns its registry (nothing global, so tests may build many apps). With several worker
processes, prometheus-client's multiprocess mode keeps every worker's values in files under
`PROMETHEUS_MULTIPROC_DIR` and the scrape adds them up, whichever worker answers it;
`llm-router serve --workers N` sets that directory up by itself (`prepare_multiprocess`).

Circuit-breaker state is read from the routing tree at scrape time, by the worker that answers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.gcstats import GcPauses

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# LLM calls take from tens of milliseconds to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}

ROUTE = ("route", "provider", "model")


class Metrics:
    def __init__(self, breakers: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        """`breakers` yields (failover path, target, state) for the tree now serving."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llm_router_requests",
            "Chat requests by route, answering provider and model, and HTTP status "
            "(stream_error: a stream that failed after its first event).",
            [*ROUTE, "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "llm_router_request_duration_seconds",
            "Whole-request latency as the caller sees it, streams to their last byte.",
            ROUTE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token_seconds = Histogram(
            "llm_router_time_to_first_token_seconds",
            "Streaming requests: time from the request to the first event sent to the caller.",
            ROUTE,
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "llm_router_upstream_duration_seconds",
            "Latency of each upstream attempt.",
            ("provider", "model"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "llm_router_attempts",
            "Upstream attempts by provider, model and outcome (ok, or the error kind).",
            ("provider", "model", "outcome"),
            registry=r,
        )
        self.failovers = Counter(
            "llm_router_failovers",
            "Moves from one target to another within a request.",
            ("route",),
            registry=r,
        )
        self.tokens = Counter(
            "llm_router_tokens",
            "Tokens of answered requests, by direction (input, output).",
            [*ROUTE, "direction"],
            registry=r,
        )
        self.cost = Counter(
            "llm_router_cost_usd",
            "Estimated cost of answered requests in US dollars.",
            ROUTE,
            registry=r,
        )
        self.spans_dropped = Counter(
            "llm_router_spans_dropped",
            "Trace spans dropped before export (queue full, exporter failing).",
            registry=r,
        )
        self.gc_pauses = GcPauses(r)  # installed for the app's lifetime by its lifespan
        self._breakers = _BreakerCollector(breakers)
        r.register(self._breakers)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: `labels()` checks, locks and looks up on every call,
        and a request records up to a dozen series. Prometheus keeps every child it has made
        anyway, so keeping them here holds nothing more."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's registry, or every worker's in multiprocess."""
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self._breakers)
        return generate_latest(registry)


class _BreakerCollector:
    """Circuit-breaker state as a gauge: 0 closed, 1 half-open, 2 open."""

    def __init__(self, breakers: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        self._breakers = breakers

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "llm_router_circuit_breaker_state",
            "Circuit breaker per failover target: 0 closed, 1 half-open, 2 open.",
            labels=["failover", "target"],
        )
        for path, target, state in self._breakers():
            family.add_metric([path, target], BREAKER_STATES.get(state, 2))
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected at scrape time only


def breakers_of(routes: Iterable[Any]) -> Iterator[tuple[str, str, str]]:
    """(failover path, target, state) for every breaker in the routing trees, each node once.

    Read from each node's `describe()`: a node with breakers lists them there.
    """
    seen: set[int] = set()
    stack = list(routes)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        breakers = node.describe().get("breakers") or {}
        for target, state in breakers.items():
            yield node.path, target, str(state)
        stack.extend(node.children())


def prepare_multiprocess(workers: int) -> Path | None:
    """Before starting `workers` processes: make sure their metrics land where a scrape sums them.

    An operator's `PROMETHEUS_MULTIPROC_DIR` is used (its stale files from an earlier run removed);
    without one, several workers get a private temporary directory, removed at exit.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    if workers <= 1:
        return None
    path = Path(tempfile.mkdtemp(prefix="llm-router-metrics-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path
