"""Two real `llm-router serve` processes sharing one Redis act as one gateway for limits,
budgets and circuit breakers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import httpx
import pytest

from app.chat import ChatRequest
from providers.base import estimate_input_tokens
from tests.procs import REDIS_URL, Served, own_prefix, serving

ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}


def config(prefix: str) -> str:
    tokens = estimate_input_tokens(ChatRequest.model_validate(ASK).messages)
    price = 0.01 / tokens * 1_000_000  # one ASK costs $0.01
    return f"""
server:
  keys:
    - {{key: k-team, name: team, rpm: 5}}
    - {{key: k-b, name: spender, budget_usd_per_day: 0.055}}
    - {{key: k-free, name: free}}
state: {{backend: redis, url: "{REDIS_URL}", prefix: "{prefix}"}}
providers:
  sim: {{type: simulated, latency_ms: 50}}
  broken: {{type: simulated, error_rate: 1.0}}
models:
  m: {{provider: sim, model: sim-1, input_price: {price}, output_price: 0}}
  bad: {{provider: broken, model: bad-1}}
routes:
  default: m
  guarded:
    failover:
      chain: [bad, m]
      circuit_breaker: {{failures: 2, cooldown_s: 60}}
"""


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    """Two gateway processes sharing one Redis (under a prefix of this module's own)."""
    with (
        own_prefix() as prefix,
        serving(tmp_path_factory.mktemp("replicas"), config(prefix), ["a", "b"]) as (a, b),
    ):
        yield a, b


def post_all(bases: list[str], count: int, key: str) -> list[int]:
    """`count` concurrent requests, alternating between the replicas; their statuses."""
    urls = [base for base, _ in zip(cycle(bases), range(count), strict=False)]
    headers = {"authorization": f"Bearer {key}"}
    with ThreadPoolExecutor(count) as pool:
        answers = pool.map(lambda u: httpx.post(u + "/v1/chat", json=ASK, headers=headers), urls)
        return [a.status_code for a in answers]


def test_one_rate_limit_across_two_replicas(replicas: tuple[Served, Served]) -> None:
    a, b = replicas
    statuses = post_all([a.base, b.base], 8, "k-team")
    assert sorted(statuses) == [200] * 5 + [429] * 3
    refused = httpx.post(b.base + "/v1/chat", json=ASK, headers={"x-api-key": "k-team"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_one_budget_across_two_replicas(replicas: tuple[Served, Served]) -> None:
    a, b = replicas
    statuses = post_all([a.base, b.base], 10, "k-b")
    assert sorted(statuses) == [200] * 5 + [402] * 5
    error = httpx.post(a.base + "/v1/chat", json=ASK, headers={"x-api-key": "k-b"}).json()
    assert error["error"]["type"] == "budget_exceeded"
    assert abs(error["error"]["details"]["spent_usd"] - 0.05) < 1e-9  # reconciled, exactly


def test_a_breaker_opened_through_one_replica_is_open_on_the_other(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    ask = {**ASK, "route": "guarded"}
    for _ in range(2):  # two failures of `bad` through replica a: its breaker opens
        data = httpx.post(a.base + "/v1/chat", json=ask, headers={"x-api-key": "k-free"}).json()
        assert data["target"] == "m"
        assert data["decisions"][0]["detail"]["attempts"][0]["error"] == "server_error"
    data = httpx.post(b.base + "/v1/chat", json=ask, headers={"x-api-key": "k-free"}).json()
    attempts = data["decisions"][0]["detail"]["attempts"]
    assert data["target"] == "m"
    assert [x.get("target") for x in attempts] == ["m", "bad"]
    assert attempts[1]["skipped"] == "circuit_open"  # b never called `bad`
