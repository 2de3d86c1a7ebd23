"""For each provider adapter and each instrumentor family: the SDK's LLM span sits under its
attempt span, with the model name and token counts, in the trace the receiver gets."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Reply as AnthropicReply
from tests.fakes.bedrock_fake import BedrockFake
from tests.fakes.gemini_fake import GeminiFake
from tests.fakes.gemini_fake import Reply as GeminiReply
from tests.fakes.openai_fake import OpenAIFake
from tests.fakes.openai_fake import Reply as OpenAIReply
from tests.fakes.openai_fake import Stream as OpenAIStream
from tests.fakes.server import serve_app
from tests.tracing_helpers import Traced, children, one


def openai_setup(stack: ExitStack) -> tuple[str, str]:
    fake = OpenAIFake()
    fake.push(OpenAIReply(usage=(11, 7)), OpenAIStream(usage=(11, 7)))
    url = stack.enter_context(serve_app(fake.app))
    return f'{{type: openai, base_url: "{url}/v1", api_key: sk-test', "gpt-4o"


def anthropic_setup(stack: ExitStack) -> tuple[str, str]:
    fake = AnthropicFake(api_key="test-key")
    fake.queue(AnthropicReply.answer("Hello"), AnthropicReply.answer("Hello"))
    url = stack.enter_context(serve_app(fake.app))
    return f'{{type: anthropic, base_url: "{url}", api_key: test-key', "claude-sonnet-4-5"


def gemini_setup(stack: ExitStack) -> tuple[str, str]:
    fake = GeminiFake()
    usage = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}
    fake.push(GeminiReply(usage=usage), GeminiReply(usage=usage))
    url = stack.enter_context(serve_app(fake.app))
    return f'{{type: gemini, base_url: "{url}", api_key: test-key', "gemini-2.5-flash"


def bedrock_setup(stack: ExitStack) -> tuple[str, str]:
    fake = BedrockFake()
    url = stack.enter_context(serve_app(fake.app))
    entry = (
        f'{{type: bedrock, region: us-east-1, endpoint_url: "{url}", '
        "access_key_id: AKIAFAKEFAKEFAKE1234, secret_access_key: fake-secret"
    )
    return entry, "anthropic.claude-3-5-sonnet-20240620-v1:0"


SETUPS: dict[str, Callable[[ExitStack], tuple[str, str]]] = {
    "openai": openai_setup,
    "anthropic": anthropic_setup,
    "gemini": gemini_setup,
    "bedrock": bedrock_setup,
}


def model_and_tokens(span_attributes: dict[str, Any], family: str) -> tuple[Any, Any, Any]:
    a = span_attributes
    if family == "openinference":
        return (
            a.get("llm.model_name"),
            a.get("llm.token_count.prompt"),
            a.get("llm.token_count.completion"),
        )
    model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model")
    return model, a.get("gen_ai.usage.input_tokens"), a.get("gen_ai.usage.output_tokens")


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("family", ["openinference", "traceloop"])
@pytest.mark.parametrize("adapter", list(SETUPS))
def test_llm_span_under_its_attempt(stack, traced, adapter: str, family: str) -> None:
    entry, model_id = SETUPS[adapter](stack)
    gw: Traced = traced(
        f"""
providers:
  up: {entry}, instrumentation: {family}}}
models:
  m: {{provider: up, model: "{model_id}"}}
routes:
  only: m
"""
    )
    assert gw.app.state.tracing.installed.instrumented, gw.app.state.tracing.installed.report
    ask = {"route": "only", "messages": [{"role": "user", "content": "Hi there"}]}
    for stream in (False, True):
        response = httpx.post(gw.url + "/v1/chat", json={**ask, "stream": stream}, timeout=10)
        assert response.status_code == 200, response.text
        spans = gw.spans(response.headers["x-trace-id"], 4)
        attempt = one(spans, "attempt m")
        assert attempt.attributes["honeyhive_event_type"] == "chain"
        (llm,) = children(spans, attempt)
        assert llm.attributes["honeyhive_event_type"] == "model"
        assert llm.attributes["honeyhive.session_id"] == attempt.attributes["honeyhive.session_id"]
        model, prompt_tokens, completion_tokens = model_and_tokens(llm.attributes, family)
        # The requested id, or the one the provider answered with (Traceloop's Bedrock
        # instrumentor drops the vendor prefix: "anthropic." here).
        answered = attempt.attributes["routing.model"]
        assert model in (model_id, answered) or model_id.endswith(f".{model}"), model
        assert prompt_tokens == attempt.attributes["router.usage.input_tokens"] > 0
        assert completion_tokens and completion_tokens > 0
        # One SDK span per call: no second family, no SDK-built-in telemetry.
        assert len(spans) == 4, [s.name for s in spans]
