# ruff: noqa: F811 - the `fakes` fixture is imported and named as a parameter
"""Mid-stream continuation: a stream that fails after text reached the caller is continued by the
next target that supports prefill, so that the caller gets the whole answer exactly once.

The primary fake streams a known text token by token and fails part-way (a cut body, a reset, a
stall); the backup fake, whose alias declares `supports_prefill`, answers a request ending in an
assistant message with the rest of the known text after it, as a prefill-capable server does.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import yaml

from providers.base import estimate_tokens
from tests.conftest import sse_events
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Reply as Claude
from tests.fakes.openai_fake import Fail, OpenAIFake, Stream
from tests.fakes.server import serve_app
from tests.test_failover_faults import (
    ASK,
    STREAM,
    Fakes,
    fakes,  # noqa: F401 - the fixture (used by name)
)
from tests.tracing_helpers import Traced, children, collector, one, traced  # noqa: F401

KNOWN = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog."]
TEXT = "".join(KNOWN)
PREFILL_MODELS = {
    "smart": {"provider": "primary", "model": "gpt-4o"},
    "cheap": {"provider": "backup", "model": "gpt-4o-mini", "supports_prefill": True},
}


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "delta")


def continuation(data: dict[str, Any]) -> dict[str, Any]:
    (decision,) = [d for d in data["decisions"] if d["policy"] == "continuation"]
    return decision


def asked_to_continue(body: dict[str, Any]) -> str:
    """The prefill a continuation request carried (its trailing assistant message)."""
    last = body["messages"][-1]
    assert last["role"] == "assistant"
    assert body["messages"][:-1] == ASK["messages"]
    return last["content"]


@pytest.mark.parametrize("cut", [1, 4, 8])
def test_a_cut_stream_is_continued_on_the_native_endpoint(fakes: Fakes, cut: int) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=KNOWN, cut_after=cut))
    backup.push(Stream(chunks=KNOWN, continues=True, usage=(20, 5)))
    base = gateway(models=PREFILL_MODELS)
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert text_of(events) == TEXT  # the whole answer, once
    delivered = "".join(KNOWN[:cut])
    assert asked_to_continue(backup.bodies[0]) == delivered
    end = events[-1]
    assert end["type"] == "end" and end["finish_reason"] == "stop" and "truncated" not in end
    assert end["target"] == "cheap" and end["model"] == "gpt-4o-mini"
    # Billed: the continuation's usage, plus what the cut stream delivered at gpt-4o's output
    # price (10/M), estimated; the cut attempt's prompt is not billed again.
    partial = estimate_tokens(delivered)
    assert end["usage"] == {
        "input_tokens": 20,
        "output_tokens": 5 + partial,
        "total_tokens": 25 + partial,
        "estimated": True,
    }
    assert end["cost_usd"] == pytest.approx((20 * 0.15 + 5 * 0.6 + partial * 10) / 1e6, rel=1e-6)
    hop = continuation(end)
    assert hop["outcome"] == "cheap"
    assert hop["detail"]["hops"] == [
        {
            "target": "smart",
            "error": "server_error",
            "message": "the provider's stream ended before its finish",
            "delivered_chars": len(delivered),
            "continued_by": "cheap",
        }
    ]
    attempts = [(a["target"], a.get("error")) for a in end["decisions"][0]["detail"]["attempts"]]
    assert attempts == [("smart", "server_error")]  # the cut attempt is not a success


@pytest.mark.parametrize("cut", [2, 5, 7])
def test_a_cut_stream_is_continued_on_the_openai_endpoint(fakes: Fakes, cut: int) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=KNOWN, cut_after=cut))
    backup.push(Stream(chunks=KNOWN, continues=True, usage=(20, 5)))
    client = openai.OpenAI(base_url=gateway(models=PREFILL_MODELS) + "/v1", api_key="x")
    received: list[tuple[str, str]] = []  # (the model a chunk names, its text)
    finishes: list[str] = []
    usage = None
    chunks = client.chat.completions.create(
        model="default", stream=True, stream_options={"include_usage": True}, **ASK
    )
    for chunk in chunks:
        received.extend((chunk.model, c.delta.content) for c in chunk.choices if c.delta.content)
        finishes.extend(c.finish_reason for c in chunk.choices if c.finish_reason)
        usage = chunk.usage or usage
    assert "".join(text for _model, text in received) == TEXT
    assert finishes == ["stop"]
    assert usage is not None and usage.completion_tokens == 5 + estimate_tokens(
        "".join(KNOWN[:cut])
    )
    # Every chunk names the model that wrote it.
    assert [model for model, _text in received] == ["gpt-4o"] * cut + ["gpt-4o-mini"] * (
        len(KNOWN) - cut
    )


def test_a_reset_mid_body_is_continued(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=KNOWN, reset_after=3))
    backup.push(Stream(chunks=KNOWN, continues=True))
    events = sse_events(httpx.post(gateway(models=PREFILL_MODELS) + "/v1/chat", json=STREAM))
    assert text_of(events) == TEXT
    assert [s.outcome for s in primary.log] == ["reset"]
    assert continuation(events[-1])["detail"]["hops"][0]["error"] == "server_error"


def test_a_stall_is_detected_and_continued(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=KNOWN, stall_after=3, stall=5))
    backup.push(Stream(chunks=KNOWN, continues=True))
    base = gateway(models=PREFILL_MODELS, idle_timeout_s=0.3)
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert text_of(events) == TEXT
    (seen,) = primary.settled()
    assert seen.outcome == "hung_up"  # the stalled upstream's connection was closed
    assert asked_to_continue(backup.bodies[0]) == "".join(KNOWN[:3])
    (hop,) = continuation(events[-1])["detail"]["hops"]
    assert hop["error"] == "timeout" and "stalled" in hop["message"]


def test_a_rejected_prefill_ends_with_the_original_failure(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=KNOWN, cut_after=3))
    backup.push(Fail.prefill_rejected())
    events = sse_events(httpx.post(gateway(models=PREFILL_MODELS) + "/v1/chat", json=STREAM))
    assert text_of(events) == "".join(KNOWN[:3])  # nothing restarted, nothing appended
    error = events[-1]
    assert error["type"] == "error"
    assert error["error"]["message"] == "the provider's stream ended before its finish"
    assert "prefill" not in error["error"]["message"]
    assert len(backup.log) == 1  # asked once, with the delivered text
    outcomes = [(a["target"], a["error"]) for a in error["error"]["details"]["attempts"]]
    assert outcomes == [("smart", "server_error"), ("cheap", "bad_request")]


def test_a_rejected_prefill_on_the_openai_endpoint_names_the_original_stall(
    fakes: Fakes,
) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=KNOWN, stall_after=2, stall=5))
    backup.push(Fail.prefill_rejected())
    base = gateway(models=PREFILL_MODELS, idle_timeout_s=0.3)
    client = openai.OpenAI(base_url=base + "/v1", api_key="x")
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="default", stream=True, **ASK):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "".join(KNOWN[:2])
    assert "stalled" in caught.value.message


def test_a_target_without_prefill_is_never_asked_to_continue(fakes: Fakes) -> None:
    primary, backup, gateway = fakes
    primary.push(Stream(chunks=KNOWN, reset_after=2))
    events = sse_events(httpx.post(gateway() + "/v1/chat", json=STREAM))
    assert text_of(events) == "".join(KNOWN[:2]) and events[-1]["type"] == "error"
    assert not backup.log


def test_claude_continues_a_prefill_it_needs_trimmed(stack, serve_gateway) -> None:
    """Anthropic refuses a final assistant turn ending in whitespace: the adapter trims it, and
    the whitespace Claude writes again is not delivered twice."""
    primary, claude = OpenAIFake("primary"), AnthropicFake(api_key="sk-ant")
    primary.push(Stream(chunks=KNOWN, cut_after=2))  # "The quick " reached the caller
    claude.queue(Claude.answer(TEXT, continues=True, text_chunk=3))
    config = {
        "providers": {
            "primary": {
                "type": "openai",
                "base_url": stack.enter_context(serve_app(primary.app)) + "/v1",
                "api_key": "sk-primary",
            },
            "claude": {
                "type": "anthropic",
                "base_url": stack.enter_context(serve_app(claude.app)),
                "api_key": "sk-ant",
            },
        },
        "models": {
            "smart": {"provider": "primary", "model": "gpt-4o"},
            "sonnet": {
                "provider": "claude",
                "model": "claude-sonnet-4-6",
                "supports_prefill": True,
            },
        },
        "routes": {"default": {"failover": {"chain": ["smart", "sonnet"]}}},
    }
    base = serve_gateway(yaml.safe_dump(config))
    events = sse_events(httpx.post(base + "/v1/chat", json=STREAM, timeout=10))
    assert text_of(events) == TEXT
    assert claude.last.body["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "The quick"}],
    }
    assert events[-1]["type"] == "end" and events[-1]["target"] == "sonnet"


def test_the_trace_shows_each_hop(stack, traced) -> None:
    primary, backup = OpenAIFake("primary"), OpenAIFake("backup")
    primary.push(Stream(chunks=KNOWN, cut_after=4))
    backup.push(Stream(chunks=KNOWN, continues=True))
    urls = {
        name: stack.enter_context(serve_app(f.app)) for name, f in [("p", primary), ("b", backup)]
    }
    gw: Traced = traced(
        f"""
providers:
  primary: {{type: openai, base_url: "{urls["p"]}/v1", api_key: sk-p}}
  backup: {{type: openai, base_url: "{urls["b"]}/v1", api_key: sk-b}}
models:
  smart: {{provider: primary, model: gpt-4o}}
  cheap: {{provider: backup, model: gpt-4o-mini, supports_prefill: true}}
routes:
  default: {{failover: {{chain: [smart, cheap]}}}}
"""
    )
    response = httpx.post(gw.url + "/v1/chat", json=STREAM, timeout=10)
    assert text_of(sse_events(response)) == TEXT
    spans = gw.spans(response.headers["x-trace-id"], 7)
    policy = one(spans, "policy failover")
    assert policy.attributes["router.outcome"] == "smart"  # the failover decision, unmasked
    cut, continued = [s for s in children(spans, policy) if s.name.startswith("attempt")]
    assert (cut.name, continued.name) == ("attempt smart", "attempt cheap")
    assert cut.attributes["provider.success"] is False
    assert continued.attributes["provider.success"] is True
