"""Every config under examples/ is valid and does what its comment says, against local fakes."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.config import load_config
from app.gateway import Gateway
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Reply as AnthropicReply
from tests.fakes.openai_fake import Fail, OpenAIFake, Reply
from tests.fakes.server import serve_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TESTED = {
    "multi-provider-agent.yaml",
    "cost-optimised.yaml",
    "ab-test.yaml",
    "by-environment.yaml",
    "resilient-failover.yaml",
}


def test_every_example_is_tested_and_valid() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == TESTED
    for name in TESTED:
        Gateway.build(
            load_config(EXAMPLES / name, env={"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})
        )


class Fakes:
    def __init__(self, stack) -> None:
        self.openai = OpenAIFake()
        self.anthropic = AnthropicFake(api_key=None)
        self.env = {
            "OPENAI_API_KEY": "k",
            "ANTHROPIC_API_KEY": "k",
            "OPENAI_BASE_URL": stack.enter_context(serve_app(self.openai.app)) + "/v1",
            "ANTHROPIC_BASE_URL": stack.enter_context(serve_app(self.anthropic.app)),
            "BACKOFF_INITIAL_S": "0.05",
        }


@pytest.fixture
def fakes(stack) -> Fakes:
    return Fakes(stack)


@pytest.fixture
def serve_example(serve_gateway, fakes):
    def serve(name: str) -> str:
        return serve_gateway((EXAMPLES / name).read_text(), env=fakes.env)

    return serve


def chat(base: str, text: str, **fields) -> dict:
    response = httpx.post(
        base + "/v1/chat", json={"messages": [{"role": "user", "content": text}], **fields}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_multi_provider_agent(serve_example, fakes) -> None:
    base = serve_example("multi-provider-agent.yaml")
    fakes.openai.push(Reply(text="creative"))
    fakes.anthropic.queue(AnthropicReply.answer("Rain taps the window"))
    data = chat(base, "Write a poem about rain")
    assert (data["target"], data["provider"]) == ("claude", "anthropic")
    assert data["message"]["content"] == "Rain taps the window"
    assert data["decisions"][0]["detail"]["raw"] == "creative"

    fakes.openai.push(Reply(text="Analytical."), Reply(text="Go wins on latency"))
    data = chat(base, "Compare Go and Rust for a web service")
    assert (data["target"], data["model"]) == ("strong", "gpt-4o")

    fakes.openai.push(Reply(text="This is factual."), Reply(text="Paris"))
    data = chat(base, "What is the capital of France?")
    assert (data["target"], data["model"]) == ("cheap", "gpt-4o-mini")

    # The classifier is the cheap model; each answer went to the model its label names.
    assert [b["model"] for b in fakes.openai.bodies] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-mini",
    ]
    assert len(fakes.anthropic.requests) == 1

    # The same prompt again: the label comes from the cache, one upstream call only.
    fakes.openai.push(Reply(text="Paris again"))
    data = chat(base, "What is the capital of France?")
    assert data["decisions"][0]["detail"]["cached"] is True and len(fakes.openai.log) == 6


@pytest.mark.parametrize(
    ("rating", "side", "model"),
    [
        ("0.9", "above", "gpt-4o"),
        ("0.7", "above", "gpt-4o"),
        ("0.69", "below", "gpt-4o-mini"),
        ("I can't rate that", "below", "gpt-4o-mini"),
    ],
)
def test_cost_optimised(serve_example, fakes, rating: str, side: str, model: str) -> None:
    base = serve_example("cost-optimised.yaml")
    fakes.openai.push(Reply(text=rating), Reply(text="answer"))
    data = chat(base, "Design a sharded key-value store")
    d = data["decisions"][0]
    assert (d["outcome"], d["detail"]["threshold"], data["model"]) == (side, 0.7, model)
    assert set(d["detail"]["estimated_cost_usd"]) == {"below", "above"}
    heuristic = chat(base, "hi", route="heuristic")
    assert heuristic["decisions"][0]["detail"]["scorer"] == "heuristic"
    assert heuristic["model"] == "gpt-4o-mini"


def test_provider_ab_test_is_even_and_sticky(serve_example, fakes) -> None:
    base = serve_example("ab-test.yaml")
    fakes.anthropic.queue(*[AnthropicReply.answer("hi") for _ in range(200)])
    first = {}
    for i in range(60):
        first[f"user-{i}"] = chat(base, "hello", user=f"user-{i}")["provider"]
    again = {u: chat(base, "hello again", user=u)["provider"] for u in list(first)[:20]}
    assert all(first[u] == p for u, p in again.items())
    shares = Counter(first.values())
    assert set(shares) == {"openai", "anthropic"} and min(shares.values()) >= 18
    d = chat(base, "hello", user="user-0")["decisions"][0]
    assert d["detail"]["split_ratio"] == 0.5 and d["detail"]["sticky"] == "user"


def test_environment_based_selection(serve_example, fakes, monkeypatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    base = serve_example("by-environment.yaml")
    fakes.openai.push(Fail(500, "down"), Fail(500, "still down"))
    fakes.anthropic.queue(AnthropicReply.answer("from claude"))
    data = chat(base, "hi")
    assert data["provider"] == "anthropic" and data["decisions"][0]["detail"]["when"] == {
        "env": "production"
    }
    assert len(fakes.openai.log) == 2  # one retry on the 500, then on to Anthropic

    monkeypatch.setenv("ENVIRONMENT", "staging")
    base = serve_example("by-environment.yaml")
    data = chat(base, "hi", user="u-1")
    assert [d["policy"] for d in data["decisions"]] == ["match", "ab_split"]

    monkeypatch.setenv("ENVIRONMENT", "development")
    base = serve_example("by-environment.yaml")
    data = chat(base, "hi")
    assert data["model"] == "gpt-4o-mini" and data["decisions"][0]["detail"]["when"] == "default"


def test_resilient_failover_retries_then_moves_on(serve_example, fakes) -> None:
    base = serve_example("resilient-failover.yaml")
    fakes.openai.push(Fail(500, "blip"), Reply(text="second time lucky"))
    data = chat(base, "hi")
    assert data["target"] == "gpt" and data["message"]["content"] == "second time lucky"
    first, second = fakes.openai.log
    assert second.started - first.started >= 0.05  # backed off before the retry

    # Rate limited on every try: retried as Retry-After says, then Anthropic answers.
    fakes.openai.push(*[Fail(429, "slow down", headers={"retry-after": "0.1"}) for _ in range(3)])
    fakes.anthropic.queue(AnthropicReply.answer("claude here"))
    data = chat(base, "hi again")
    assert data["target"] == "claude"
    tries = fakes.openai.log[2:]
    assert len(tries) == 3
    assert all(b.started - a.started >= 0.1 for a, b in itertools.pairwise(tries))
    attempts = data["decisions"][0]["detail"]["attempts"]
    assert [a.get("error") for a in attempts] == ["rate_limited"] * 3 + [None]
