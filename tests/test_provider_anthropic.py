"""The Anthropic adapter, driven through the real `anthropic` SDK against the local fake."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from pydantic import ValidationError

from app.chat import (
    ChatRequest,
    FunctionCall,
    Message,
    StreamEvent,
    StreamFinish,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from app.errors import ErrorKind, ProviderError
from providers.anthropic import (
    AnthropicConfig,
    AnthropicProvider,
    default_max_tokens,
    to_anthropic_messages,
)
from providers.base import ModelConfig
from tests.fakes.anthropic_fake import AnthropicFake, Reply, ToolUse
from tests.fakes.server import serve_app

KEY = "sk-ant-test-secret-0123456789"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[AnthropicFake, str]]:
    fake = AnthropicFake(api_key=KEY)
    with serve_app(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(served: tuple[AnthropicFake, str]) -> AnthropicFake:
    fake = served[0]
    fake.requests.clear()
    fake._script.clear()
    return fake


@pytest.fixture
async def provider(
    served: tuple[AnthropicFake, str], fake: AnthropicFake
) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider("anthropic", AnthropicConfig(api_key=KEY, base_url=served[1]))
    yield p
    await p.aclose()


def model_cfg(model: str = "claude-sonnet-4-6", **kw: Any) -> ModelConfig:
    return ModelConfig(provider="anthropic", model=model, **kw)


def chat(*messages: dict[str, Any], **kw: Any) -> ChatRequest:
    if not messages:
        messages = ({"role": "user", "content": "Hello"},)
    return ChatRequest(messages=[Message(**m) for m in messages], **kw)


async def collect(provider: AnthropicProvider, model: ModelConfig, request: ChatRequest) -> list:
    return [event async for event in provider.stream(model, request)]


def finish_of(events: list[StreamEvent]) -> StreamFinish:
    finishes = [e for e in events if isinstance(e, StreamFinish)]
    assert len(finishes) == 1 and events[-1] is finishes[0]
    return finishes[0]


# ---- config ----------------------------------------------------------------------------------


def test_config_shape() -> None:
    config = AnthropicConfig.model_validate(
        {
            "type": "anthropic",
            "api_key": KEY,
            "base_url": "http://x",
            "instrumentation": "traceloop",
        }
    )
    assert config.api_key is not None and config.api_key.get_secret_value() == KEY
    assert KEY not in repr(config)
    with pytest.raises(ValidationError):
        AnthropicConfig.model_validate({"type": "anthropic", "apikey": KEY})
    with pytest.raises(ValidationError):
        AnthropicConfig.model_validate({"type": "openai"})


def test_client_built_once_without_sdk_retries_or_telemetry() -> None:
    p = AnthropicProvider("a", AnthropicConfig(api_key=KEY, base_url="http://127.0.0.1:9"))
    assert p.client.max_retries == 0
    assert p.client.open_telemetry["traces"]["enabled"] is False


# ---- non-streaming ---------------------------------------------------------------------------


async def test_complete_text(provider: AnthropicProvider, fake: AnthropicFake) -> None:
    fake.queue(Reply.answer("Rain on the roof", model="claude-sonnet-4-6-20260101"))
    result = await provider.complete(model_cfg(), chat())

    assert result.message.content == "Rain on the roof"
    assert result.message.tool_calls == []
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (11, 7)
    assert result.usage.total_tokens == 18 and not result.usage.estimated
    assert result.model == "claude-sonnet-4-6-20260101"

    sent = fake.last
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["anthropic-version"]
    assert "traceparent" not in sent.headers
    assert sent.body["model"] == "claude-sonnet-4-6"
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]}
    ]
    assert "stream" not in sent.body or sent.body["stream"] is False
    assert "system" not in sent.body


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
async def test_stop_reasons(
    provider: AnthropicProvider, fake: AnthropicFake, stop_reason: str, finish: str
) -> None:
    fake.queue(Reply.answer("x", stop_reason=stop_reason))
    assert (await provider.complete(model_cfg(), chat())).finish_reason == finish


async def test_system_lifting_and_merging(provider: AnthropicProvider, fake: AnthropicFake) -> None:
    request = chat(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five"},
    )
    await provider.complete(model_cfg(), request)
    body = fake.last.body
    assert body["system"] == "Be brief.\n\nBe kind."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]
    assert [b["text"] for b in body["messages"][1]["content"]] == ["three", "four"]


async def test_only_system_messages_is_a_bad_request(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.complete(model_cfg(), chat({"role": "system", "content": "x"}))
    assert info.value.kind is ErrorKind.BAD_REQUEST
    assert fake.requests == []


@pytest.mark.parametrize(
    ("request_max", "model_max", "model_id", "expected"),
    [
        (None, None, "claude-sonnet-4-6", 8192),
        (None, None, "claude-3-haiku-20240307", 4096),
        (None, 2000, "claude-sonnet-4-6", 2000),
        (300, 2000, "claude-sonnet-4-6", 300),
    ],
)
async def test_max_tokens_always_sent(
    provider: AnthropicProvider,
    fake: AnthropicFake,
    request_max: int | None,
    model_max: int | None,
    model_id: str,
    expected: int,
) -> None:
    await provider.complete(model_cfg(model_id, max_tokens=model_max), chat(max_tokens=request_max))
    assert fake.last.body["max_tokens"] == expected
    assert default_max_tokens("claude-opus-4-1") == 8192


async def test_stop_sequences_and_dropped_sampling(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    result = await provider.complete(
        model_cfg(), chat(stop=["\n\n", "END"], temperature=0.2, top_p=0.9)
    )
    body = fake.last.body
    # The API refuses whitespace-only stop sequences (the fake does too): dropped, with a note.
    assert body["stop_sequences"] == ["END"]
    assert any("whitespace-only stop" in n for n in result.notes)
    # The SDK's API version refuses sampling parameters (the fake does too): dropped, with notes.
    assert "temperature" not in body and "top_p" not in body
    assert any("temperature" in n for n in result.notes)
    assert any("top_p" in n for n in result.notes)


async def test_sampling_sent_with_a_pinned_legacy_api_version(
    served: tuple[AnthropicFake, str], fake: AnthropicFake
) -> None:
    config = AnthropicConfig(api_key=KEY, base_url=served[1], api_version="2023-06-01")
    p = AnthropicProvider("legacy", config)
    try:
        result = await p.complete(model_cfg(), chat(temperature=0.2, top_p=0.9))
    finally:
        await p.aclose()
    assert fake.last.headers["anthropic-version"] == "2023-06-01"
    assert fake.last.body["temperature"] == 0.2 and fake.last.body["top_p"] == 0.9
    assert result.notes == []


# ---- tools -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
        (None, None),
    ],
)
async def test_tools_and_tool_choice(
    provider: AnthropicProvider, fake: AnthropicFake, choice: Any, expected: Any
) -> None:
    await provider.complete(model_cfg(), chat(tools=[WEATHER_TOOL], tool_choice=choice))
    body = fake.last.body
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body.get("tool_choice") == expected


async def test_tool_use_response_becomes_tool_calls(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(
        Reply(
            text="Let me look.",
            tools=[
                ToolUse("get_weather", {"city": "Paris"}, "toolu_01"),
                ToolUse("get_weather", {"city": "Oslo", "units": ["c"]}, "toolu_02"),
            ],
        )
    )
    result = await provider.complete(model_cfg(), chat(tools=[WEATHER_TOOL]))
    assert result.finish_reason == "tool_calls"
    assert result.message.content == "Let me look."
    calls = result.message.tool_calls
    assert [c.id for c in calls] == ["toolu_01", "toolu_02"]
    assert all(c.function.name == "get_weather" for c in calls)
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert json.loads(calls[1].function.arguments) == {"city": "Oslo", "units": ["c"]}


async def test_tool_round_trip_request_translation(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    request = chat(
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"id": "toolu_02", "function": {"name": "get_weather", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "3C, snow"},
        {"role": "user", "content": "And tomorrow?"},
        tools=[WEATHER_TOOL],
    )
    result = await provider.complete(model_cfg(), request)
    assert result.message.content  # the fake accepted the translated conversation

    messages = fake.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {}},
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C, sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "3C, snow"},
        {"type": "text", "text": "And tomorrow?"},
    ]


def test_tool_results_come_first_in_a_merged_user_turn() -> None:
    messages = [
        Message(role="user", content="q"),
        Message(
            role="assistant",
            content="calling",
            tool_calls=[ToolCall(id="t1", function=FunctionCall(name="f", arguments="{}"))],
        ),
        Message(role="user", content="by the way"),
        Message(role="tool", tool_call_id="t1", content=""),
    ]
    system, turns = to_anthropic_messages(messages)
    assert system is None
    assert turns[1]["content"][0] == {"type": "text", "text": "calling"}
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1"},
        {"type": "text", "text": "by the way"},
    ]


async def test_unparseable_tool_arguments_are_a_bad_request(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    request = chat(
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "t1", "function": {"name": "f", "arguments": "[1, 2"}}],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "ok"},
    )
    with pytest.raises(ProviderError) as info:
        await provider.complete(model_cfg(), request)
    assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.provider == "anthropic"
    assert fake.requests == []


# ---- streaming -------------------------------------------------------------------------------


async def test_stream_text(provider: AnthropicProvider, fake: AnthropicFake) -> None:
    fake.queue(Reply.answer("Rain taps the window", model="claude-sonnet-4-6-20260101"))
    events = await collect(provider, model_cfg(), chat({"role": "user", "content": "haiku"}))

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == "Rain taps the window"
    finish = finish_of(events)
    assert finish.finish_reason == "stop" and not finish.truncated
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (11, 7)
    assert not finish.usage.estimated
    assert finish.model == "claude-sonnet-4-6-20260101"
    assert fake.last.body["stream"] is True


async def test_stream_tool_use_fragments_are_assembled(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(
        Reply(
            text="Checking.",
            tools=[
                ToolUse("get_weather", {"city": "Paris", "days": 3}, "toolu_A"),
                ToolUse("get_weather", {"city": "Oslo"}, "toolu_B"),
            ],
            json_fragments=4,
        )
    )
    events = await collect(provider, model_cfg(), chat(tools=[WEATHER_TOOL]))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [c.index for c in calls] == [0, 1]
    assert [c.tool_call.id for c in calls] == ["toolu_A", "toolu_B"]
    assert json.loads(calls[0].tool_call.function.arguments) == {"city": "Paris", "days": 3}
    assert json.loads(calls[1].tool_call.function.arguments) == {"city": "Oslo"}
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Checking."
    finish = finish_of(events)
    assert finish.finish_reason == "tool_calls" and not finish.truncated


async def test_stream_with_ping_and_empty_tool_input(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(Reply(text=None, tools=[ToolUse("now", {}, "toolu_N")]))
    events = await collect(provider, model_cfg(), chat())
    (call,) = [e for e in events if isinstance(e, ToolCallDelta)]
    assert json.loads(call.tool_call.function.arguments) == {}


async def test_cut_stream_is_truncated(provider: AnthropicProvider, fake: AnthropicFake) -> None:
    # message_start, ping, block start, 3 text deltas … then the body ends: no message_stop.
    fake.queue(Reply.answer("abcdefghijklmnop", text_chunk=2, cut_after=6))
    events = await collect(provider, model_cfg(), chat())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "abcdef"
    finish = finish_of(events)
    assert finish.truncated
    assert finish.usage.estimated and finish.usage.input_tokens == 11
    assert finish.usage.output_tokens >= 1


async def test_stream_cut_inside_a_tool_call_drops_it(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(Reply(text=None, tools=[ToolUse("f", {"a": "bcdefgh"})], cut_after=4))
    events = await collect(provider, model_cfg(), chat())
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    assert finish_of(events).truncated


async def test_stream_error_event_mid_stream(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(Reply.answer("partial answer here", error_after=5))
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(model_cfg(), chat()):
            seen.append(event)
    assert info.value.kind is ErrorKind.SERVER_ERROR and info.value.kind.retryable
    assert "Overloaded" in info.value.message
    assert any(isinstance(e, TextDelta) for e in seen)
    assert not any(isinstance(e, StreamFinish) for e in seen)


async def test_stream_error_event_rate_limit(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(
        Reply.answer(
            "x", error_after=2, stream_error_type="rate_limit_error", stream_error_message="slow"
        )
    )
    with pytest.raises(ProviderError) as info:
        await collect(provider, model_cfg(), chat())
    assert info.value.kind is ErrorKind.RATE_LIMITED


async def test_stream_broken_connection(provider: AnthropicProvider, fake: AnthropicFake) -> None:
    fake.queue(Reply.answer("abcdefgh", abort_after=4))
    with pytest.raises(ProviderError) as info:
        await collect(provider, model_cfg(), chat())
    assert info.value.kind is ErrorKind.SERVER_ERROR


async def test_stream_consumer_may_stop_early(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(Reply.answer("a long answer " * 20))
    agen = provider.stream(model_cfg(), chat())
    first = await agen.__anext__()
    assert isinstance(first, TextDelta)
    await agen.aclose()
    # the pooled client still works afterwards
    assert (await provider.complete(model_cfg(), chat())).message.content


# ---- errors ----------------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        Reply.fail(429, "Number of request tokens has exceeded your rate limit", retry_after=7),
        ErrorKind.RATE_LIMITED,
        7.0,
        id="429",
    ),
    pytest.param(
        Reply.fail(429, "slow down", headers={"retry-after-ms": "1500"}),
        ErrorKind.RATE_LIMITED,
        1.5,
        id="429-ms",
    ),
    pytest.param(Reply.fail(500, "Internal server error"), ErrorKind.SERVER_ERROR, None, id="500"),
    pytest.param(Reply.fail(529, "Overloaded"), ErrorKind.SERVER_ERROR, None, id="529"),
    pytest.param(
        Reply.fail(400, "prompt is too long: 212000 tokens > 200000 maximum"),
        ErrorKind.CONTEXT_LENGTH,
        None,
        id="400-prompt-too-long",
    ),
    pytest.param(
        Reply.fail(400, "input length and `max_tokens` exceed context limit: 190000 + 20000"),
        ErrorKind.CONTEXT_LENGTH,
        None,
        id="400-context-limit",
    ),
    pytest.param(
        Reply.fail(400, "messages.0.content: Field required"),
        ErrorKind.BAD_REQUEST,
        None,
        id="400",
    ),
    pytest.param(
        Reply.fail(401, f"invalid x-api-key {KEY}"), ErrorKind.AUTHENTICATION, None, id="401"
    ),
    pytest.param(
        Reply.fail(403, f"key {KEY} lacks permission"), ErrorKind.AUTHENTICATION, None, id="403"
    ),
    pytest.param(Reply.fail(404, "model: claude-nope"), ErrorKind.NOT_FOUND, None, id="404"),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("reply", "kind", "retry_after"), ERROR_CASES)
async def test_errors_are_mapped(
    provider: AnthropicProvider,
    fake: AnthropicFake,
    reply: Reply,
    kind: ErrorKind,
    retry_after: float | None,
    streaming: bool,
) -> None:
    fake.queue(reply)
    with pytest.raises(ProviderError) as info:
        if streaming:
            await collect(provider, model_cfg(), chat())
        else:
            await provider.complete(model_cfg(), chat())
    error = info.value
    assert error.kind is kind
    assert error.status == reply.status
    assert error.provider == "anthropic" and error.model == "claude-sonnet-4-6"
    if retry_after is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(retry_after)
    if kind is ErrorKind.AUTHENTICATION:
        assert KEY not in error.message and "x-api-key" not in error.message
    else:
        assert error.message == reply.error_message
    assert len(fake.requests) == 1  # the SDK's own retries are off


async def test_529_is_retryable(provider: AnthropicProvider, fake: AnthropicFake) -> None:
    fake.queue(Reply.fail(529, "Overloaded"))
    with pytest.raises(ProviderError) as info:
        await provider.complete(model_cfg(), chat())
    assert info.value.kind.retryable and info.value.status == 529


async def test_wrong_key_is_an_authentication_error(
    served: tuple[AnthropicFake, str], fake: AnthropicFake
) -> None:
    p = AnthropicProvider("a", AnthropicConfig(api_key="sk-ant-wrong", base_url=served[1]))
    try:
        with pytest.raises(ProviderError) as info:
            await p.complete(model_cfg(), chat())
    finally:
        await p.aclose()
    assert info.value.kind is ErrorKind.AUTHENTICATION and "wrong" not in info.value.message


def _clean_anthropic_env(monkeypatch: pytest.MonkeyPatch, home: Any) -> None:
    for name in list(os.environ):
        if name.startswith("ANTHROPIC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))


async def test_no_key_at_all(
    served: tuple[AnthropicFake, str],
    fake: AnthropicFake,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    _clean_anthropic_env(monkeypatch, tmp_path)
    p = AnthropicProvider("a", AnthropicConfig(base_url=served[1]))
    try:
        with pytest.raises(ProviderError) as info:
            await p.complete(model_cfg(), chat())
        with pytest.raises(ProviderError) as streamed:
            await collect(p, model_cfg(), chat())
    finally:
        await p.aclose()
    assert info.value.kind is ErrorKind.AUTHENTICATION
    assert streamed.value.kind is ErrorKind.AUTHENTICATION
    assert fake.requests == []


async def test_broken_credentials_profile_does_not_break_construction(
    served: tuple[AnthropicFake, str],
    fake: AnthropicFake,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    _clean_anthropic_env(monkeypatch, tmp_path)
    # The SDK raises CredentialsError from its constructor for a config dir without a profile.
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    with pytest.raises(anthropic.CredentialsError):
        anthropic.AsyncAnthropic(base_url=served[1])
    p = AnthropicProvider("a", AnthropicConfig(base_url=served[1]))
    try:
        with pytest.raises(ProviderError) as info:
            await p.complete(model_cfg(), chat())
    finally:
        await p.aclose()
    assert info.value.kind is ErrorKind.AUTHENTICATION
    assert str(tmp_path) not in info.value.message
    assert fake.requests == []


async def test_key_from_environment(
    served: tuple[AnthropicFake, str], fake: AnthropicFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    p = AnthropicProvider("a", AnthropicConfig(base_url=served[1]))
    try:
        assert (await p.complete(model_cfg(), chat())).message.content
    finally:
        await p.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_connection_refused(streaming: bool) -> None:
    config = AnthropicConfig(api_key=KEY, base_url=f"http://127.0.0.1:{_closed_port()}")
    p = AnthropicProvider("a", config)
    try:
        with pytest.raises(ProviderError) as info:
            if streaming:
                await collect(p, model_cfg(), chat())
            else:
                await p.complete(model_cfg(), chat())
    finally:
        await p.aclose()
    assert info.value.kind is ErrorKind.SERVER_ERROR and info.value.kind.retryable


async def test_per_model_timeout(provider: AnthropicProvider, fake: AnthropicFake) -> None:
    fake.queue(Reply.answer("late", delay=1.5))
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await provider.complete(model_cfg(timeout_s=0.2), chat())
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 1.0


async def test_per_model_timeout_mid_stream(
    provider: AnthropicProvider, fake: AnthropicFake
) -> None:
    fake.queue(Reply.answer("slow drip", text_chunk=3, event_delay=1.5))
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await collect(provider, model_cfg(timeout_s=0.2), chat())
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 1.0


# ---- the SDK's built-in telemetry ------------------------------------------------------------


@contextlib.contextmanager
def global_tracer_provider(tracer_provider: TracerProvider) -> Iterator[None]:
    """Install `tracer_provider` as OpenTelemetry's global one for a block, then restore."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace.set_tracer_provider(tracer_provider)
    try:
        yield
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


async def test_builtin_sdk_telemetry_is_off(
    served: tuple[AnthropicFake, str], fake: AnthropicFake
) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    url = served[1]
    with global_tracer_provider(tracer_provider):
        tracer = trace.get_tracer("test")
        ours = AnthropicProvider("a", AnthropicConfig(api_key=KEY, base_url=url))
        # A control: the same SDK with its default option does make a span per call here.
        control = anthropic.AsyncAnthropic(api_key=KEY, base_url=url, max_retries=0)
        try:
            with tracer.start_as_current_span("attempt"):
                await ours.complete(model_cfg(), chat())
                await collect(ours, model_cfg(), chat())
            our_headers = [r.headers for r in fake.requests]
            assert {s.name for s in exporter.get_finished_spans()} == {"attempt"}

            exporter.clear()
            fake.requests.clear()
            with tracer.start_as_current_span("attempt"):
                await control.messages.create(
                    model="claude-sonnet-4-6",
                    max_tokens=10,
                    messages=[{"role": "user", "content": "hi"}],
                )
            names = [s.name for s in exporter.get_finished_spans()]
            assert "anthropic.messages.create" in names
        finally:
            await ours.aclose()
            await control.close()
    # Nor does our client inject the trace context of a span of its own.
    assert all("traceparent" not in h for h in our_headers)
    assert "traceparent" in fake.requests[0].headers
