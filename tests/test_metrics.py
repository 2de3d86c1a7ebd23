"""`GET /metrics`: read with prometheus-client's own parser, counters seen moving with traffic."""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import parse_config
from app.factory import create_app

CONFIG = """
providers:
  sim:  {type: simulated, latency_ms: 5}
  down: {type: simulated, latency_ms: 1, error_rate: {server_error: 1.0}}
models:
  good: {provider: sim, model: sim-good, input_price: 1.0, output_price: 2.0}
  bad:  {provider: down, model: sim-bad}
routes:
  default:
    failover:
      chain: [bad, good]
      circuit_breaker: {failures: 2, cooldown_s: 600}
  broken: bad
"""

HELLO = {"messages": [{"role": "user", "content": "hello there"}]}


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (sample name, sorted labels)."""
    response = httpx.get(base + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(item in ls for item in labels.items())
    )


@pytest.fixture
def base(serve_gateway: Callable[..., str]) -> str:
    return serve_gateway(CONFIG)


def test_counters_move_with_requests_streams_and_failures(base: str) -> None:
    before = scrape(base)
    assert total(before, "llm_router_requests_total") == 0
    # The breaker gauge is there from the start, closed.
    assert (
        value(
            before,
            "llm_router_circuit_breaker_state",
            failover="routes.default.failover",
            target="bad",
        )
        == 0
    )

    answers = [httpx.post(base + "/v1/chat", json=HELLO).json() for _ in range(3)]
    streamed = httpx.post(base + "/v1/chat", json={**HELLO, "stream": True})
    assert streamed.status_code == 200
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
    client.chat.completions.create(model="good", messages=HELLO["messages"])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=HELLO["messages"])

    after = scrape(base)
    route = {"route": "default", "provider": "sim", "model": "sim-good"}
    assert value(after, "llm_router_requests_total", **route, status="200") == 4
    assert value(after, "llm_router_requests_total", route="good", provider="sim",
                 model="sim-good", status="200") == 1  # fmt: skip
    assert value(after, "llm_router_requests_total", route="broken", provider="down",
                 model="sim-bad", status="502") == 1  # fmt: skip

    # The first two requests tried `bad` then moved on; then its breaker opened and it was
    # skipped; `broken` names it directly.
    assert value(after, "llm_router_attempts_total", provider="down", model="sim-bad",
                 outcome="server_error") == 3  # fmt: skip
    assert value(after, "llm_router_attempts_total", provider="sim", model="sim-good",
                 outcome="ok") == 5  # fmt: skip
    assert value(after, "llm_router_failovers_total", route="default") == 2
    assert (
        value(
            after,
            "llm_router_circuit_breaker_state",
            failover="routes.default.failover",
            target="bad",
        )
        == 2
    )

    # Tokens and cost add up to what the callers were told.
    told_in = sum(a["usage"]["input_tokens"] for a in answers)
    told_out = sum(a["usage"]["output_tokens"] for a in answers)
    told_cost = sum(a["cost_usd"] for a in answers)
    counted_in = value(after, "llm_router_tokens_total", **route, direction="input")
    counted_out = value(after, "llm_router_tokens_total", **route, direction="output")
    assert counted_in > told_in and counted_out > told_out  # the stream's tokens are in too
    end = [line for line in streamed.text.splitlines() if '"type":"end"' in line]
    assert end, streamed.text
    cost = value(after, "llm_router_cost_usd_total", **route)
    assert cost > told_cost > 0

    # Latency histograms: one observation per request, one per streaming request, one per attempt.
    assert value(after, "llm_router_request_duration_seconds_count", **route) == 4
    assert value(after, "llm_router_time_to_first_token_seconds_count", **route) == 1
    assert value(after, "llm_router_upstream_duration_seconds_count",
                 provider="down", model="sim-bad") == 3  # fmt: skip
    upstream_sum = value(after, "llm_router_upstream_duration_seconds_sum",
                         provider="sim", model="sim-good")  # fmt: skip
    assert 5 * 0.004 < upstream_sum < 5  # five attempts of about 5 ms each
    assert value(after, "llm_router_request_duration_seconds_bucket", **route, le="+Inf") == 4


def test_tokens_and_cost_match_the_answers_exactly(base: str) -> None:
    answers = [
        httpx.post(base + "/v1/chat", json={**HELLO, "route": "good"}).json() for _ in range(4)
    ]
    after = scrape(base)
    labels = {"route": "good", "provider": "sim", "model": "sim-good"}
    assert value(after, "llm_router_tokens_total", **labels, direction="input") == sum(
        a["usage"]["input_tokens"] for a in answers
    )
    assert value(after, "llm_router_tokens_total", **labels, direction="output") == sum(
        a["usage"]["output_tokens"] for a in answers
    )
    assert math.isclose(
        value(after, "llm_router_cost_usd_total", **labels),
        sum(a["cost_usd"] for a in answers),
        rel_tol=1e-6,
    )


def test_caller_chosen_names_do_not_mint_label_values(base: str) -> None:
    assert httpx.post(base + "/v1/chat", json={**HELLO, "route": "no-such"}).status_code == 404
    direct = httpx.post(base + "/v1/chat", json={**HELLO, "route": "sim/any-model-id"})
    assert direct.status_code == 200
    after = scrape(base)
    routes = {
        dict(labels).get("route") for name, labels in after if name == "llm_router_requests_total"
    }
    assert routes == {"(direct)"}


def test_spans_the_exporter_drops_are_counted(serve_gateway, stack) -> None:
    from tests.fakes.otlp_collector import Collector
    from tests.fakes.server import serve_app

    hanging = Collector(hang_s=30)
    url = stack.enter_context(serve_app(hanging.app))
    traced = CONFIG + f"tracing: {{exporter: otlp, endpoint: '{url}/v1/traces', max_queue: 4}}\n"
    base = serve_gateway(traced)
    for _ in range(10):
        assert httpx.post(base + "/v1/chat", json={**HELLO, "route": "broken"}).status_code == 502
    dropped = value(scrape(base), "llm_router_spans_dropped_total")
    # Ten requests make 40+ spans; the queue holds 4 and a batch is stuck in the hanging export.
    assert dropped >= 20
    assert value(scrape(base), "llm_router_spans_dropped_total") >= dropped


def test_each_app_has_its_own_registry() -> None:
    first = create_app(parse_config(CONFIG, env={}))
    second = create_app(parse_config(CONFIG, env={}))
    first.state.telemetry.spans_dropped()
    assert b"llm_router_spans_dropped_total 1.0" in first.state.telemetry.metrics.exposition()
    assert b"llm_router_spans_dropped_total 0.0" in second.state.telemetry.metrics.exposition()


def test_gc_pauses_are_exported_while_the_app_serves(base: str) -> None:
    import gc

    gc.collect()  # a full collection while the app is up: timed into generation 2
    samples = scrape(base)
    assert value(samples, "llm_router_gc_pause_seconds_count", generation="2") >= 1
    assert value(samples, "llm_router_gc_pause_seconds_sum", generation="2") > 0
