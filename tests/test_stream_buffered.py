# ruff: noqa: F811 - the `fakes` fixture is imported and named as a parameter
"""Buffered streams: nothing reaches the caller until the answer is whole, so a stream that fails
part-way restarts cleanly on the next target."""

from __future__ import annotations

import httpx
import openai
import pytest

from policies.failover import FailoverConfig
from tests.conftest import sse_events
from tests.fakes.openai_fake import Stream
from tests.test_failover_faults import (
    ASK,
    STREAM,
    Fakes,
    fakes,  # noqa: F401 - the fixture (used by name)
)

KNOWN = ["The ", "quick ", "brown ", "fox."]


@pytest.mark.parametrize(
    "failure",
    [
        {"cut_after": 2},
        {"reset_after": 1},
        {"stall_after": 2, "stall": 5},
    ],
    ids=["cut", "reset", "stall"],
)
def test_a_failed_stream_restarts_cleanly_on_the_next_target(fakes: Fakes, failure) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=["Half ", "an ", "answer ", "lost"], **failure))
    backup.push(Stream(chunks=KNOWN, usage=(8, 4)))
    base = gateway(buffer=True, idle_timeout_s=0.3)
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "".join(KNOWN)
    end = events[-1]
    assert end["type"] == "end" and end["target"] == "cheap" and "truncated" not in end
    assert end["usage"] == {"input_tokens": 8, "output_tokens": 4, "total_tokens": 12}
    (decision,) = [d for d in end["decisions"] if d["policy"] == "failover"]
    assert [(a["target"], a.get("error") is None) for a in decision["detail"]["attempts"]] == [
        ("smart", False),
        ("cheap", True),
    ]
    assert backup.bodies[0]["messages"][-1]["role"] != "assistant"  # a restart, no prefill


def test_a_buffered_stream_restarts_on_the_openai_endpoint(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=["Half ", "an ", "answer"], cut_after=2))
    backup.push(Stream(chunks=KNOWN))
    client = openai.OpenAI(base_url=gateway(buffer=True) + "/v1", api_key="x")
    received: list[str] = []
    for chunk in client.chat.completions.create(model="default", stream=True, **ASK):
        received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "".join(KNOWN)


def test_a_buffered_reset_is_retried_on_the_same_target(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=["lost"], reset_after=0), Stream(chunks=KNOWN))
    events = sse_events(httpx.post(gateway(buffer=True, retries=1) + "/v1/chat", json=STREAM))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "".join(KNOWN)
    assert events[-1]["target"] == "smart" and not backup.log


def test_buffer_and_hedge_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        FailoverConfig(chain=["a", "b"], buffer=True, hedge=True, first_token_timeout_s=1)
