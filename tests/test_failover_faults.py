"""Each upstream fault the failover policy handles, reproduced by a fake OpenAI server.

The gateway's conduct is checked from the upstream's side: the fake's own log says how many
attempts each target got, how far apart they were, and when the gateway hung up on a silent or
stalled answer. Timeouts and waits are kept small so that every test takes about a second.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import yaml

from app.config import parse_config
from app.factory import create_app
from tests.conftest import sse_events
from tests.fakes.openai_fake import Fail, Hang, OpenAIFake, Reply, Reset, Stream
from tests.fakes.server import serve_app

ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}
STREAM = {**ASK, "stream": True}
TIMER_SLACK = 0.6  # scheduling and loopback overhead allowed on top of a timer (CI is busy)
EARLY = 0.05  # the fake's clock starts once the request has arrived, a little after the gateway's


def near(seconds: float, limit: float) -> bool:
    """`seconds`, as measured at the fake, is the gateway's `limit` timer firing."""
    return limit - EARLY <= seconds < limit + TIMER_SLACK


def router_yaml(
    urls: dict[str, str],
    *,
    chain: tuple[str, ...] = ("smart", "cheap"),
    models: dict[str, dict[str, Any]] | None = None,
    timeout_s: float = 5,
    **failover: Any,
) -> str:
    """A config with one provider per fake and a `default` failover route over `chain`."""
    models = models or {
        "smart": {"provider": "primary", "model": "gpt-4o"},
        "cheap": {"provider": "backup", "model": "gpt-4o-mini"},
    }
    config = {
        "providers": {
            name: {"type": "openai", "base_url": f"{url}/v1", "api_key": f"sk-{name}"}
            for name, url in urls.items()
        },
        "models": {name: {"timeout_s": timeout_s, **m} for name, m in models.items()},
        "routes": {
            "default": {
                "failover": {
                    "chain": list(chain),
                    "backoff": {"initial_s": 0.05, "max_s": 0.2},
                    **failover,
                }
            }
        },
    }
    return yaml.safe_dump(config)


Fakes = tuple[OpenAIFake, OpenAIFake, Callable[..., str]]


@pytest.fixture
def fakes(stack, serve_gateway) -> Fakes:
    """(primary, backup, gateway(**router_yaml options) → base URL)."""
    primary, backup = OpenAIFake("primary"), OpenAIFake("backup")
    urls = {
        "primary": stack.enter_context(serve_app(primary.app)),
        "backup": stack.enter_context(serve_app(backup.app)),
    }
    return primary, backup, lambda **kw: serve_gateway(router_yaml(urls, **kw))


def failover_detail(data: dict[str, Any]) -> dict[str, Any]:
    (decision,) = [d for d in data["decisions"] if d["policy"] == "failover"]
    return decision["detail"]


def tried(data: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(target, error kind or None for success) of every attempt, in order."""
    return [(a["target"], a.get("error")) for a in failover_detail(data)["attempts"]]


def gaps(fake: OpenAIFake) -> list[float]:
    """Seconds between the end of each attempt and the start of the next, as the fake saw it."""
    log = fake.log
    return [b.started - a.ended for a, b in itertools.pairwise(log) if a.ended]


# ---- rate limits -----------------------------------------------------------------------------


def test_429_retry_after_is_waited_then_the_same_target_answers(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Fail(429, "slow down", headers={"retry-after": "0.4"}), Reply(text="again"))
    data = httpx.post(gateway(retries=1) + "/v1/chat", json=ASK).json()
    assert data["message"]["content"] == "again"
    assert len(primary.log) == 2 and not backup.log
    (waited,) = gaps(primary)
    assert near(waited, 0.4)
    detail = failover_detail(data)
    assert detail["waits"] == [
        {"target": "smart", "after_attempt": 1, "wait_ms": 400.0, "reason": "retry_after"}
    ]
    assert tried(data) == [("smart", "rate_limited"), ("smart", None)]


def test_retry_after_beyond_the_cap_moves_on_at_once(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Fail(429, "come back in an hour", headers={"retry-after": "3600"}))
    started = time.monotonic()
    data = httpx.post(gateway(retries=3, max_retry_after_s=1) + "/v1/chat", json=ASK).json()
    assert data["target"] == "cheap"
    assert len(primary.log) == 1  # not asked again, not waited for
    assert backup.log[0].started - primary.log[0].ended < TIMER_SLACK
    assert time.monotonic() - started < 1
    assert "waits" not in failover_detail(data)


def test_429_without_retry_after_backs_off_exponentially_then_moves_on(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(*[Fail(429, "slow down", type="rate_limit_error")] * 3)
    data = httpx.post(gateway(retries=2) + "/v1/chat", json=ASK).json()
    assert data["target"] == "cheap" and len(backup.log) == 1
    assert tried(data) == [("smart", "rate_limited")] * 3 + [("cheap", None)]
    # backoff initial 0.05, max 0.2, jitter up to 0.05: attempt n waits 0.05·2^(n-1) + [0, 0.05].
    first, second = gaps(primary)
    assert 0.05 <= first < 0.1 + TIMER_SLACK
    assert 0.1 <= second < 0.15 + TIMER_SLACK
    waits = failover_detail(data)["waits"]
    assert [w["reason"] for w in waits] == ["backoff", "backoff"]
    assert 50 <= waits[0]["wait_ms"] <= 100 and 100 <= waits[1]["wait_ms"] <= 150
    # The time the fake saw between attempts is the time the policy says it spent waiting.
    assert sum(gaps(primary)) == pytest.approx(failover_detail(data)["waited_ms"] / 1000, abs=0.15)


# ---- server errors and resets -----------------------------------------------------------------


def test_one_500_is_retried_on_the_same_target(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Fail(500, "boom"), Reply(text="recovered"))
    data = httpx.post(gateway(retries=2) + "/v1/chat", json=ASK).json()
    assert data["message"]["content"] == "recovered" and data["target"] == "smart"
    assert [s.status for s in primary.log] == [500, 200] and not backup.log


def test_persistent_503_moves_on_within_the_retry_budget(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.default = Fail(503, "overloaded")
    data = httpx.post(gateway(retries=2) + "/v1/chat", json=ASK).json()
    assert data["target"] == "cheap"
    assert len(primary.log) == 3 and len(backup.log) == 1  # 1 + 2 retries, then the next
    attempts = failover_detail(data)["attempts"]
    assert [(a["target"], a.get("status")) for a in attempts] == [("smart", 503)] * 3 + [
        ("cheap", None)
    ]
    assert all(a["latency_ms"] >= 0 for a in attempts)
    # Failed attempts are not billed: the usage and cost are the backup's answer alone.
    assert data["usage"]["total_tokens"] == 18
    assert data["cost_usd"] == pytest.approx((11 * 0.15 + 7 * 0.6) / 1e6)


def test_connection_reset_before_headers_is_retried(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Reset(), Reply(text="after the reset"))
    data = httpx.post(gateway(retries=1) + "/v1/chat", json=ASK).json()
    assert data["message"]["content"] == "after the reset"
    assert [s.outcome for s in primary.log] == ["reset", "reply"] and not backup.log
    assert tried(data) == [("smart", "server_error"), ("smart", None)]


def test_connection_reset_without_retries_moves_on(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Reset())
    data = httpx.post(gateway() + "/v1/chat", json=ASK).json()
    assert data["target"] == "cheap"
    assert [s.outcome for s in primary.log] == ["reset"] and len(backup.log) == 1


# ---- silence --------------------------------------------------------------------------------


def test_a_silent_upstream_times_out_once_and_is_not_retried(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Hang(10))
    data = httpx.post(gateway(retries=3, timeout_s=0.4) + "/v1/chat", json=ASK).json()
    assert data["target"] == "cheap"
    (seen,) = primary.settled()  # asked once, whatever the retry budget
    assert seen.outcome == "hung_up"  # the gateway hung up on it …
    assert near(seen.duration, 0.4)  # … at the per-attempt timeout
    assert near(backup.log[0].started - seen.started, 0.4)
    assert tried(data) == [("smart", "timeout"), ("cheap", None)]


def test_failover_deadline_bounds_the_whole_chain(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Hang(10))
    backup.push(Hang(10))
    started = time.monotonic()
    response = httpx.post(gateway(timeout_s=5, deadline_s=0.6) + "/v1/chat", json=ASK, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert 0.6 <= elapsed < 2.0  # the deadline, far before the 5s per-attempt timeout
    error = response.json()["error"]
    assert error["type"] == "upstream_timeout"
    assert [(a["target"], a["error"]) for a in error["details"]["attempts"]] == [
        ("smart", "timeout")
    ]
    assert [s.outcome for s in primary.settled()] == ["hung_up"] and not backup.log


# ---- client faults ---------------------------------------------------------------------------


def test_context_length_moves_to_a_larger_window_without_retrying(stack, serve_gateway) -> None:
    small, big = OpenAIFake("small"), OpenAIFake("big")
    urls = {"small": stack.enter_context(serve_app(small.app))}
    urls["big"] = stack.enter_context(serve_app(big.app))
    small.default = Fail.context_length(8192)
    models = {
        "mini": {"provider": "small", "model": "mini-8k", "context_window": 8192},
        "mini-too": {"provider": "small", "model": "mini-8k-b", "context_window": 8192},
        "large": {"provider": "big", "model": "large-128k", "context_window": 128000},
    }
    base = serve_gateway(
        router_yaml(urls, chain=("mini", "mini-too", "large"), models=models, retries=3)
    )
    data = httpx.post(base + "/v1/chat", json=ASK).json()
    assert data["target"] == "large"
    assert len(small.log) == 1 and len(big.log) == 1  # no retry, and no same-sized model
    assert failover_detail(data)["attempts"] == [
        {
            "target": "mini",
            "provider": "small",
            "model": "mini-8k",
            "error": "context_length_exceeded",
            "status": 400,
            "message": small.default.message,
            "latency_ms": pytest.approx(0, abs=1000),
        },
        {
            "target": "large",
            "provider": "big",
            "model": "large-128k",
            "ok": True,
            "latency_ms": pytest.approx(0, abs=1000),
        },
        {"target": "mini-too", "skipped": "context_window_too_small"},
    ]


def test_context_length_with_no_larger_target_is_the_providers_400(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.default = Fail.context_length(128000)
    models = {
        "smart": {"provider": "primary", "model": "gpt-4o", "context_window": 128000},
        "cheap": {"provider": "backup", "model": "gpt-4o-mini", "context_window": 16000},
    }
    response = httpx.post(gateway(models=models, retries=2) + "/v1/chat", json=ASK)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length is 128000 tokens" in error["message"]
    assert len(primary.log) == 1 and not backup.log


def test_content_filter_is_neither_retried_nor_failed_over(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Fail.content_filter())
    response = httpx.post(gateway(retries=3) + "/v1/chat", json=ASK)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filtered"
    assert "content management policy" in error["message"]  # the provider's reason
    assert len(primary.log) == 1 and not backup.log


def test_other_client_errors_are_neither_retried_nor_failed_over(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Fail(400, "'temperature' is out of range", type="invalid_request_error"))
    response = httpx.post(gateway(retries=3) + "/v1/chat", json=ASK)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "'temperature' is out of range"
    assert len(primary.log) == 1 and not backup.log


# ---- streams ---------------------------------------------------------------------------------


def test_slow_first_token_moves_on_at_the_failover_limit(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(first_delay=5))
    backup.push(Stream(chunks=["Rain ", "falls."]))
    base = gateway(first_token_timeout_s=0.4, retries=2)
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "Rain falls."
    end = events[-1]
    assert end["type"] == "end" and end["target"] == "cheap"
    (seen,) = primary.settled()  # a slow upstream is not asked twice
    assert seen.outcome == "hung_up" and seen.first_chunk is None
    assert near(backup.log[0].started - seen.started, 0.4)
    assert tried(end) == [("smart", "timeout"), ("cheap", None)]


def test_first_token_limit_can_be_the_model_aliases(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(first_delay=5))
    models = {
        "smart": {"provider": "primary", "model": "gpt-4o", "first_token_timeout_s": 0.3},
        "cheap": {"provider": "backup", "model": "gpt-4o-mini"},
    }
    end = sse_events(httpx.post(gateway(models=models) + "/v1/chat", json=STREAM, timeout=10))[-1]
    assert end["target"] == "cheap"
    assert near(backup.log[0].started - primary.log[0].started, 0.3)


def test_a_stall_after_the_first_delta_ends_with_an_error_event(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=["one ", "two ", "three"], stall_after=1, stall=5))
    base = gateway(idle_timeout_s=0.4, retries=2)
    started = time.monotonic()
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert time.monotonic() - started < 0.4 + 2 * TIMER_SLACK
    assert events[0] == {"type": "delta", "text": "one "}
    error = events[-1]
    assert error["type"] == "error"  # never a normal end
    assert error["error"]["type"] == "upstream_timeout"
    assert "stalled" in error["error"]["message"]
    assert error["error"]["details"]["attempts"][0]["error"] == "timeout"
    (seen,) = primary.settled()
    assert seen.outcome == "hung_up" and near(seen.ended - seen.first_chunk, 0.4)
    assert not backup.log  # output had begun: no failover


def test_a_stall_on_the_openai_endpoint_ends_with_an_error_chunk(fakes: Fakes) -> None:
    primary, _backup, gateway = fakes
    primary.push(Stream(chunks=["one ", "two "], stall_after=1, stall=5))
    client = openai.OpenAI(base_url=gateway(idle_timeout_s=0.3) + "/v1", api_key="x")
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="default", stream=True, **ASK):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "one "
    assert "stalled" in caught.value.message


def test_a_reset_mid_stream_ends_with_an_error_event(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=["one ", "two "], reset_after=1))
    events = sse_events(httpx.post(gateway(retries=2) + "/v1/chat", json=STREAM))
    assert [e["type"] for e in events] == ["delta", "error"]
    assert events[-1]["error"]["type"] == "upstream_error"
    assert [s.outcome for s in primary.log] == ["reset"] and not backup.log


def test_a_malformed_chunk_is_skipped(fakes: Fakes) -> None:
    primary, _backup, gateway = fakes
    primary.push(Stream(chunks=["one ", "two ", "three"], malformed_after=1, usage=(5, 3)))
    events = sse_events(httpx.post(gateway() + "/v1/chat", json=STREAM))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "one two three"
    end = events[-1]
    assert end["type"] == "end" and end["finish_reason"] == "stop" and "truncated" not in end
    assert end["usage"] == {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}


def test_a_stream_without_finish_or_terminator_is_flagged_with_its_usage(fakes: Fakes) -> None:
    primary, _backup, gateway = fakes
    primary.push(Stream(chunks=["cut ", "short"], finish=None, done=False, usage=(9, 2)))
    events = sse_events(httpx.post(gateway() + "/v1/chat", json=STREAM))
    end = events[-1]
    assert end["type"] == "end" and end["truncated"] is True
    assert end["usage"] == {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}


def test_a_stream_held_open_after_its_finish_is_finalised_promptly(fakes: Fakes) -> None:
    primary, _backup, gateway = fakes
    # Finish reason and usage sent, then neither [DONE] nor the end of the body.
    primary.push(
        Stream(chunks=["all ", "here"], done=False, hold=5), Stream(usage=None, done=False, hold=5)
    )
    base = gateway(idle_timeout_s=3)
    for expected in ("all here", "Hello there."):
        started = time.monotonic()
        events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
        assert time.monotonic() - started < 1.0 + TIMER_SLACK  # not the 3s idle limit, nor 5s
        assert "".join(e["text"] for e in events if e["type"] == "delta") == expected
        assert events[-1]["type"] == "end" and events[-1]["finish_reason"] == "stop"
        assert "truncated" not in events[-1]


def test_openai_endpoint_forwards_usage_before_flagging_a_cut_stream(fakes: Fakes) -> None:
    primary, _backup, gateway = fakes
    primary.push(Stream(chunks=["cut"], finish=None, done=False, usage=(9, 1)))
    base = gateway()
    body = {"model": "default", **STREAM, "stream_options": {"include_usage": True}}
    chunks = sse_events(httpx.post(base + "/v1/chat/completions", json=body))
    assert chunks[-2]["usage"] == {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
    assert chunks[-1]["error"]["code"] == "stream_truncated"


def test_stream_failover_before_the_first_delta_bills_only_the_answer(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Reset(), Fail(503, "down"))
    backup.push(Stream(chunks=["ok"], usage=(4, 1)))
    end = sse_events(httpx.post(gateway(retries=1) + "/v1/chat", json=STREAM))[-1]
    assert tried(end) == [("smart", "server_error"), ("smart", "server_error"), ("cheap", None)]
    assert end["usage"]["total_tokens"] == 5
    assert end["cost_usd"] == pytest.approx((4 * 0.15 + 1 * 0.6) / 1e6)


# ---- every target failed ---------------------------------------------------------------------


def test_all_failed_is_502_listing_every_attempt(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Fail(500, "down"), Reset())
    backup.push(Fail(503, "also down"), Fail(503, "also down"))
    response = httpx.post(gateway(retries=1) + "/v1/chat", json=ASK)
    assert response.status_code == 502
    attempts = response.json()["error"]["details"]["attempts"]
    assert [(a["target"], a["error"], a.get("status")) for a in attempts] == [
        ("smart", "server_error", 500),
        ("smart", "server_error", None),
        ("cheap", "server_error", 503),
        ("cheap", "server_error", 503),
    ]
    assert all(isinstance(a["latency_ms"], float) for a in attempts)
    assert len(primary.log) == 2 and len(backup.log) == 2


# ---- the circuit breaker, end to end ---------------------------------------------------------


def test_breaker_skips_a_dead_target_and_uses_it_again_after_the_cooldown(stack) -> None:
    primary, backup = OpenAIFake("primary"), OpenAIFake("backup")
    urls = {
        "primary": stack.enter_context(serve_app(primary.app)),
        "backup": stack.enter_context(serve_app(backup.app)),
    }
    text = router_yaml(urls, circuit_breaker={"failures": 2, "cooldown_s": 0.5})
    app = create_app(parse_config(text, env={}))
    base = stack.enter_context(serve_app(app))

    def breakers() -> dict[str, str]:
        return app.state.gateway.routes["default"].describe()["breakers"]

    primary.default = Fail(503, "down")
    for _ in range(2):
        assert httpx.post(base + "/v1/chat", json=ASK).json()["target"] == "cheap"
    assert len(primary.log) == 2
    assert breakers() == {"smart": "open", "cheap": "closed"}

    # Open: the dead target costs nothing, not even a connection.
    opened = time.monotonic()
    data = httpx.post(base + "/v1/chat", json=ASK).json()
    assert data["target"] == "cheap" and len(primary.log) == 2
    assert failover_detail(data)["attempts"][-1] == {"target": "smart", "skipped": "circuit_open"}

    # Recovered: after the cooldown one probe goes through, and it closes the breaker.
    primary.default = Reply(text="back")
    time.sleep(max(0.0, 0.5 - (time.monotonic() - opened)) + 0.05)
    data = httpx.post(base + "/v1/chat", json=ASK).json()
    assert data["target"] == "smart" and data["message"]["content"] == "back"
    assert breakers()["smart"] == "closed"
    assert len(primary.log) == 3


def test_one_breaker_per_target_whichever_route_names_it(stack) -> None:
    primary, backup = OpenAIFake("primary"), OpenAIFake("backup")
    urls = {
        "primary": stack.enter_context(serve_app(primary.app)),
        "backup": stack.enter_context(serve_app(backup.app)),
    }
    config = yaml.safe_load(router_yaml(urls, circuit_breaker={"failures": 1, "cooldown_s": 30}))
    config["routes"]["other"] = {
        "failover": {"chain": ["smart", "cheap"], "circuit_breaker": {"failures": 1}}
    }
    base = stack.enter_context(serve_app(create_app(parse_config(yaml.safe_dump(config)))))
    primary.default = Fail(503, "down")
    assert httpx.post(base + "/v1/chat", json=ASK).json()["target"] == "cheap"
    # The other route finds `smart` already open: a dead target is dead for every route.
    data = httpx.post(base + "/v1/chat", json={**ASK, "route": "other"}).json()
    assert data["target"] == "cheap" and len(primary.log) == 1
    assert failover_detail(data)["attempts"][-1] == {"target": "smart", "skipped": "circuit_open"}
