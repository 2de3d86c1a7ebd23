"""max_cost_usd over HTTP: targets over budget are skipped; nothing fits → 402 budget_exceeded."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import sse_events

CONFIG = """
providers:
  sim: {type: simulated}
models:
  cheap: {provider: sim, model: sim-cheap, input_price: 0.15, output_price: 0.60}
  strong: {provider: sim, model: sim-strong, input_price: 2.5, output_price: 10}
routes:
  default: {failover: [strong, cheap]}
  only-strong: strong
  split:
    ab_split: {variants: {A: {weight: 1, to: strong}, B: {weight: 1, to: cheap}}}
"""


def ask(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "Write a haiku about rain"}], **fields}


@pytest.fixture
def base(serve_gateway) -> str:
    return serve_gateway(CONFIG)


def test_failover_skips_a_target_over_budget(base: str) -> None:
    # 1000 output tokens: strong ≈ $0.010, cheap ≈ $0.0006.
    data = httpx.post(base + "/v1/chat", json=ask(max_tokens=1000, max_cost_usd=0.002)).json()
    assert data["target"] == "cheap"
    budget, failover = data["decisions"]
    assert budget["policy"] == "budget" and budget["outcome"] == "over_budget"
    assert budget["detail"]["target"] == "strong" and budget["detail"]["max_cost_usd"] == 0.002
    assert budget["detail"]["estimated_cost_usd"] > 0.002
    assert failover["outcome"] == "cheap"
    # Nothing was sent to the target over budget: the only attempt is cheap's.
    assert [a["target"] for a in failover["detail"]["attempts"]] == ["cheap"]


def test_a_generous_budget_changes_nothing(base: str) -> None:
    data = httpx.post(base + "/v1/chat", json=ask(max_tokens=1000, max_cost_usd=1)).json()
    assert data["target"] == "strong" and len(data["decisions"]) == 1


@pytest.mark.parametrize("route", ["default", "only-strong", "split"])
@pytest.mark.parametrize("extra", [{}, {"stream": True}, {"dry_run": True}])
def test_nothing_within_budget_is_402(base: str, route: str, extra: dict) -> None:
    body = ask(route=route, max_tokens=1000, max_cost_usd=0.0001, **extra)
    response = httpx.post(base + "/v1/chat", json=body)
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
    assert error["details"]["max_cost_usd"] == 0.0001
    skipped = {s["target"] for s in error["details"]["skipped"]}
    assert skipped <= {"strong", "cheap"} and skipped
    assert error["details"]["attempts"] == []


def test_stream_within_budget_streams(base: str) -> None:
    body = ask(max_tokens=1000, max_cost_usd=0.002, stream=True)
    events = sse_events(httpx.post(base + "/v1/chat", json=body))
    assert events[-1]["type"] == "end" and events[-1]["target"] == "cheap"
    assert any(e["type"] == "delta" for e in events)


def test_without_max_tokens_the_estimate_assumes_a_default_output(base: str) -> None:
    # 256 assumed output tokens: strong ≈ $0.0026, cheap ≈ $0.00016.
    data = httpx.post(base + "/v1/chat", json=ask(max_cost_usd=0.001)).json()
    assert data["target"] == "cheap"
    assert 0.0025 < data["decisions"][0]["detail"]["estimated_cost_usd"] < 0.0027
