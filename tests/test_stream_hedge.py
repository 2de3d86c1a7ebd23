# ruff: noqa: F811 - the `fakes` fixture is imported and named as a parameter
"""Hedged streams: a first token later than `first_token_timeout_s` starts the next target
alongside; the first to deliver wins and the other's connection is closed, unbilled."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from policies.failover import FailoverConfig
from tests.conftest import sse_events
from tests.fakes.openai_fake import Fail, Stream
from tests.test_failover_faults import (
    ASK,
    STREAM,
    TIMER_SLACK,
    Fakes,
    fakes,  # noqa: F401 - the fixture (used by name)
)

DEADLINE = 0.3
FALLBACK_FIRST_TOKEN = 0.2


def hedges(data: dict[str, Any]) -> dict[str, Any]:
    (decision,) = [d for d in data["decisions"] if d["policy"] == "hedge"]
    return decision


def test_a_late_first_token_is_answered_by_the_hedge(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=["slow ", "answer"], first_delay=5))
    backup.push(Stream(chunks=["Rain ", "falls."], first_delay=FALLBACK_FIRST_TOKEN, usage=(9, 2)))
    base = gateway(hedge=True, first_token_timeout_s=DEADLINE)
    started = time.monotonic()
    with httpx.stream("POST", base + "/v1/chat", json=STREAM, timeout=10) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_token = time.monotonic() - started
        body = first + "\n\n" + "\n".join(lines)
    assert first_token < DEADLINE + FALLBACK_FIRST_TOKEN + TIMER_SLACK
    assert first_token >= DEADLINE + FALLBACK_FIRST_TOKEN - 0.05
    events = sse_events(httpx.Response(200, text=body))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "Rain falls."
    end = events[-1]
    assert end["type"] == "end" and end["target"] == "cheap"
    # The loser is not billed: the usage is the winner's alone.
    assert end["usage"] == {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}
    (late,) = primary.settled()
    assert late.outcome == "hung_up" and late.first_chunk is None  # its connection was closed
    # Hedged at the deadline, counted from the gateway's call (a new connection makes the first
    # request reach the fake a little later than that).
    assert DEADLINE - 0.15 <= backup.log[0].started - late.started < DEADLINE + TIMER_SLACK
    assert len(primary.log) == 1 and len(backup.log) == 1  # one extra request, no more
    decision = hedges(end)
    assert decision["outcome"] == "cheap"
    assert decision["detail"]["hedges"][0]["late"] == "smart"
    assert decision["detail"]["hedges"][0]["hedge"] == "cheap"
    assert decision["detail"]["hedges"][0]["won"] == "cheap"
    assert {"cancelled": "smart"} in decision["detail"]["hedges"]
    failover = next(d for d in end["decisions"] if d["policy"] == "failover")
    tried = [(a["target"], a.get("error")) for a in failover["detail"]["attempts"]]
    assert sorted(tried, key=str) == sorted([("cheap", None), ("smart", "cancelled")], key=str)


def test_the_late_target_can_still_win_and_the_hedge_is_closed(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=["first ", "after all"], first_delay=0.5))
    backup.push(Stream(chunks=["too ", "late"], first_delay=5))
    client = openai.OpenAI(
        base_url=gateway(hedge=True, first_token_timeout_s=DEADLINE) + "/v1", api_key="x"
    )
    received: list[str] = []
    for chunk in client.chat.completions.create(model="default", stream=True, **ASK):
        received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "first after all"
    (hedge,) = backup.settled()
    assert hedge.outcome == "hung_up" and hedge.first_chunk is None
    assert [s.outcome for s in primary.log] == ["stream"]


def test_no_hedge_before_the_deadline(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(first_delay=0.05))
    events = sse_events(
        httpx.post(gateway(hedge=True, first_token_timeout_s=DEADLINE) + "/v1/chat", json=STREAM)
    )
    assert events[-1]["target"] == "smart" and not backup.log
    assert not [d for d in events[-1]["decisions"] if d["policy"] == "hedge"]


def test_a_failure_before_the_deadline_fails_over_as_usual(fakes: Fakes) -> None:
    primary, _backup, gateway = fakes
    primary.push(Fail(503, "overloaded"))
    events = sse_events(
        httpx.post(gateway(hedge=True, first_token_timeout_s=DEADLINE) + "/v1/chat", json=STREAM)
    )
    assert events[-1]["target"] == "cheap" and len(primary.log) == 1


def test_never_hedges_into_an_open_breaker(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    backup.default = Fail(503, "down")
    base = gateway(
        hedge=True,
        first_token_timeout_s=DEADLINE,
        circuit_breaker={"failures": 1, "cooldown_s": 60},
    )
    # A hedge that fails leaves the late target to answer, and opens the hedge's breaker.
    primary.push(Stream(chunks=["late ", "but here"], first_delay=0.6))
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "late but here"
    assert len(backup.log) == 1
    primary.push(Stream(chunks=["slow ", "but sure"], first_delay=0.6))
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "slow but sure"
    assert len(backup.log) == 1  # not hedged into
    (decision,) = [d for d in events[-1]["decisions"] if d["policy"] == "hedge"]
    assert decision["detail"]["hedges"][0]["hedge"] is None


def test_hedge_needs_a_first_token_deadline() -> None:
    with pytest.raises(ValueError, match="hedge needs first_token_timeout_s"):
        FailoverConfig(chain=["a", "b"], hedge=True)
