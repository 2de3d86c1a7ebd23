"""The Gemini adapter, run through the real `google-genai` SDK against a local fake of the API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.chat import ChatRequest, Message, StreamFinish, TextDelta, ToolCallDelta
from app.errors import ErrorKind, ProviderError
from providers.base import ModelConfig
from providers.gemini import GeminiConfig, GeminiProvider
from tests.fakes.gemini_fake import (
    FunctionCallSpec,
    GeminiFake,
    Reply,
    error_info,
    retry_info,
)
from tests.fakes.server import serve_app

API_KEY = "test-gemini-key-123"
MODEL = ModelConfig(provider="gemini", model="gemini-2.5-flash", timeout_s=5)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}

_FAKE = GeminiFake()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_app(_FAKE.app) as url:
        yield url


@pytest.fixture
def fake(base_url: str) -> GeminiFake:
    _FAKE.reset()
    return _FAKE


@pytest.fixture
async def provider(base_url: str) -> AsyncIterator[GeminiProvider]:
    p = GeminiProvider("gemini", GeminiConfig(api_key=API_KEY, base_url=base_url))
    yield p
    await p.aclose()


def chat(*messages: dict[str, Any], **kw: Any) -> ChatRequest:
    if not messages:
        messages = ({"role": "user", "content": "Hi there"},)
    return ChatRequest(messages=[Message(**m) for m in messages], **kw)


async def collect(provider: GeminiProvider, request: ChatRequest, model: ModelConfig = MODEL):
    return [event async for event in provider.stream(model, request)]


def function_declarations(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for tool in body["tools"] for d in tool["functionDeclarations"]]


# ---- non-streaming ---------------------------------------------------------------------------


async def test_complete_text(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(text="Hello from Gemini"))
    completion = await provider.complete(MODEL, chat())

    assert completion.message.content == "Hello from Gemini"
    assert completion.message.tool_calls == []
    assert completion.finish_reason == "stop"
    assert completion.usage.input_tokens == 11
    assert completion.usage.output_tokens == 7
    assert completion.usage.total_tokens == 18
    assert not completion.usage.estimated
    assert completion.model == "gemini-test-001"

    sent = fake.last
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == API_KEY
    assert sent["body"]["contents"] == [{"role": "user", "parts": [{"text": "Hi there"}]}]
    assert len(fake.requests) == 1


async def test_text_parts_are_joined_and_thoughts_dropped(
    provider: GeminiProvider, fake: GeminiFake
) -> None:
    response = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "Hello, "},
                        {"text": "world"},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
    }
    fake.push(Reply(raw=response))
    completion = await provider.complete(MODEL, chat())
    assert completion.message.content == "Hello, world"

    fake.push(Reply(chunks=[response]))
    events = await collect(provider, chat())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, world"


async def test_system_instruction_and_roles(provider: GeminiProvider, fake: GeminiFake) -> None:
    await provider.complete(
        MODEL,
        chat(
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "How are you?"},
        ),
    )
    body = fake.last["body"]
    assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"text": "Hello."}]
    assert "You are terse." not in json.dumps(body["contents"])


async def test_generation_config(provider: GeminiProvider, fake: GeminiFake) -> None:
    await provider.complete(MODEL, chat(temperature=0.3, top_p=0.9, max_tokens=64, stop=["END"]))
    config = fake.last["body"]["generationConfig"]
    assert config == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }


async def test_model_max_tokens_is_the_default(provider: GeminiProvider, fake: GeminiFake) -> None:
    model = MODEL.model_copy(update={"max_tokens": 99})
    await provider.complete(model, chat())
    assert fake.last["body"]["generationConfig"] == {"maxOutputTokens": 99}
    await provider.complete(model, chat(max_tokens=5))
    assert fake.last["body"]["generationConfig"] == {"maxOutputTokens": 5}


async def test_no_generation_config_when_nothing_is_set(
    provider: GeminiProvider, fake: GeminiFake
) -> None:
    await provider.complete(MODEL, chat())
    body = fake.last["body"]
    assert not body.get("generationConfig")
    assert "tools" not in body
    assert "systemInstruction" not in body


@pytest.mark.parametrize(
    ("gemini_reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
async def test_finish_reasons(
    provider: GeminiProvider, fake: GeminiFake, gemini_reason: str, expected: str
) -> None:
    text = None if expected == "content_filter" else "partial"
    fake.push(Reply(text=text, finish_reason=gemini_reason))
    completion = await provider.complete(MODEL, chat())
    assert completion.finish_reason == expected
    assert completion.message.content == text


async def test_blocked_prompt_is_content_filtered(
    provider: GeminiProvider, fake: GeminiFake
) -> None:
    fake.push(Reply(block_reason="SAFETY"))
    with pytest.raises(ProviderError) as caught:
        await provider.complete(MODEL, chat())
    assert caught.value.kind is ErrorKind.CONTENT_FILTERED
    assert "SAFETY" in caught.value.message

    fake.push(Reply(block_reason="PROHIBITED_CONTENT"))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, chat())
    assert caught.value.kind is ErrorKind.CONTENT_FILTERED


async def test_usage_estimated_when_absent(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(text="some answer text", usage=None, model_version=None))
    completion = await provider.complete(MODEL, chat())
    assert completion.usage.estimated
    assert completion.usage.input_tokens > 0
    assert completion.usage.output_tokens > 0
    assert completion.model == MODEL.model  # no modelVersion: the configured id


async def test_thinking_tokens_count_as_output(provider: GeminiProvider, fake: GeminiFake) -> None:
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 20}
    fake.push(Reply(usage=usage))
    completion = await provider.complete(MODEL, chat())
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (10, 24)


# ---- tools -----------------------------------------------------------------------------------


async def test_tool_call_round_trip(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(
        Reply(
            text=None,
            function_calls=[FunctionCallSpec("get_weather", {"city": "Paris", "days": 2})],
        )
    )
    request = chat({"role": "user", "content": "Weather in Paris?"}, tools=[WEATHER_TOOL])
    completion = await provider.complete(MODEL, request)

    # What the adapter sent: the declaration with the caller's JSON schema, untouched.
    declarations = function_declarations(fake.last["body"])
    assert len(declarations) == 1
    declaration = declarations[0]
    assert declaration["name"] == "get_weather"
    assert declaration["description"] == "Current weather for a city"
    schema = declaration.get("parametersJsonSchema") or declaration.get("parameters_json_schema")
    assert schema == WEATHER_TOOL["function"]["parameters"]

    # What came back: one tool call, args as JSON text, a generated stable id.
    assert completion.finish_reason == "tool_calls"
    assert completion.message.content is None
    [call] = completion.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 2}
    assert call.id.startswith("call_")
    fake.push(
        Reply(
            text=None,
            function_calls=[FunctionCallSpec("get_weather", {"city": "Paris", "days": 2})],
        )
    )
    again = await provider.complete(MODEL, request)
    assert again.message.tool_calls[0].id == call.id  # stable for the same response

    # The tool's answer goes back as a function_response under the function's name.
    fake.push(Reply(text="It is sunny."))
    follow_up = chat(
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        tools=[WEATHER_TOOL],
    )
    completion = await provider.complete(MODEL, follow_up)
    assert completion.message.content == "It is sunny."

    contents = fake.last["body"]["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    [model_part] = contents[1]["parts"]
    assert model_part["functionCall"]["name"] == "get_weather"
    assert model_part["functionCall"]["args"] == {"city": "Paris", "days": 2}
    [response_part] = contents[2]["parts"]
    assert response_part["functionResponse"]["name"] == "get_weather"
    assert response_part["functionResponse"]["response"] == {"temp_c": 21}
    assert response_part["functionResponse"]["id"] == model_part["functionCall"]["id"] == call.id


async def test_gemini3_call_id_and_thought_signature_round_trip(
    provider: GeminiProvider, fake: GeminiFake
) -> None:
    fake.push(
        Reply(
            text=None,
            function_calls=[
                FunctionCallSpec(
                    "get_weather", {"city": "Oslo"}, id="fc-abc", thought_signature="c2lnLTEyMw=="
                )
            ],
        )
    )
    completion = await provider.complete(MODEL, chat(tools=[WEATHER_TOOL]))
    [call] = completion.message.tool_calls
    assert call.id == "fc-abc"

    await provider.complete(
        MODEL,
        chat(
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": "fc-abc", "content": "cold"},
            tools=[WEATHER_TOOL],
        ),
    )
    contents = fake.last["body"]["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == "c2lnLTEyMw=="
    assert contents[1]["parts"][0]["functionCall"]["id"] == "fc-abc"
    response = contents[2]["parts"][0]["functionResponse"]
    assert response == {"id": "fc-abc", "name": "get_weather", "response": {"output": "cold"}}


async def test_unknown_signature_uses_the_documented_placeholder(
    provider: GeminiProvider, fake: GeminiFake
) -> None:
    calls = [
        {"id": "call_1", "function": {"name": "get_weather", "arguments": '{"city": "A"}'}},
        {"id": "call_2", "function": {"name": "lookup", "arguments": "{}"}},
    ]
    await provider.complete(
        MODEL,
        chat(
            {"role": "user", "content": "two things"},
            {"role": "assistant", "content": "Checking.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "[1, 2]"},
            {"role": "tool", "tool_call_id": "call_2", "content": "plain text"},
            {"role": "user", "content": "thanks"},
        ),
    )
    contents = fake.last["body"]["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "user"]
    text_part, first, second = contents[1]["parts"]
    assert text_part == {"text": "Checking."}
    assert first["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in second
    # Both answers travel in one turn, each under its own function name.
    responses = [p["functionResponse"] for p in contents[2]["parts"]]
    assert [(r["name"], r["response"]) for r in responses] == [
        ("get_weather", {"output": [1, 2]}),
        ("lookup", {"output": "plain text"}),
    ]


async def test_tool_message_without_a_call_is_refused(
    provider: GeminiProvider, fake: GeminiFake
) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.complete(
            MODEL,
            chat(
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "nope", "content": "x"},
            ),
        )
    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert fake.requests == []


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
async def test_tool_choice(
    provider: GeminiProvider, fake: GeminiFake, choice: Any, expected: dict[str, Any]
) -> None:
    await provider.complete(MODEL, chat(tools=[WEATHER_TOOL], tool_choice=choice))
    assert fake.last["body"]["toolConfig"]["functionCallingConfig"] == expected


# ---- streaming -------------------------------------------------------------------------------


async def test_stream_text(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(text="Streaming works fine", text_chunks=3))
    events = await collect(provider, chat(temperature=0.1))

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 3
    assert "".join(d.text for d in deltas) == "Streaming works fine"
    finish = events[-1]
    assert isinstance(finish, StreamFinish)
    assert sum(isinstance(e, StreamFinish) for e in events) == 1
    assert finish.finish_reason == "stop"
    assert not finish.truncated
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (11, 7)
    assert finish.model == "gemini-test-001"

    sent = fake.last
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert sent["query"] == {"alt": "sse"}
    assert sent["headers"]["x-goog-api-key"] == API_KEY
    assert sent["body"]["generationConfig"] == {"temperature": 0.1}


async def test_stream_tool_call(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(
        Reply(
            text="Let me check.",
            text_chunks=1,
            function_calls=[
                FunctionCallSpec("get_weather", {"city": "Rome"}),
                FunctionCallSpec("get_weather", {"city": "Milan"}),
            ],
        )
    )
    events = await collect(provider, chat(tools=[WEATHER_TOOL]))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [c.index for c in calls] == [0, 1]
    assert [json.loads(c.tool_call.function.arguments) for c in calls] == [
        {"city": "Rome"},
        {"city": "Milan"},
    ]
    assert calls[0].tool_call.id != calls[1].tool_call.id
    assert isinstance(events[-1], StreamFinish)
    assert events[-1].finish_reason == "tool_calls"


async def test_stream_safety_finish(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(text="Some text", finish_reason="SAFETY"))
    events = await collect(provider, chat())
    assert events[-1].finish_reason == "content_filter"
    assert not events[-1].truncated


async def test_stream_cut_is_truncated(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(text="one two three four", text_chunks=4, cut=True))
    events = await collect(provider, chat())
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 3
    finish = events[-1]
    assert isinstance(finish, StreamFinish)
    assert finish.truncated
    assert finish.usage.estimated  # the final usage never arrived


async def test_stream_dropped_connection_raises(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(text="one two three", text_chunks=3, abort=True))
    seen: list[Any] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(MODEL, chat()):
            seen.append(event)
    assert caught.value.kind is ErrorKind.SERVER_ERROR
    assert len(seen) == 1 and isinstance(seen[0], TextDelta)


async def test_stream_error_before_first_chunk(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(status=429, error_message="Quota exceeded", error_details=[retry_info("2s")]))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, chat())
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after == 2.0
    assert len(fake.requests) == 1


async def test_stream_error_event_mid_stream(provider: GeminiProvider, fake: GeminiFake) -> None:
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}]}
    error = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    fake.push(Reply(chunks=[first, error]))
    seen: list[Any] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(MODEL, chat()):
            seen.append(event)
    assert caught.value.kind is ErrorKind.SERVER_ERROR
    assert [e.text for e in seen] == ["Hi"]


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind", "retry_after"),
    [
        (Reply(status=429, headers={"Retry-After": "3"}), ErrorKind.RATE_LIMITED, 3.0),
        (Reply(status=429, error_details=[retry_info("7s")]), ErrorKind.RATE_LIMITED, 7.0),
        (Reply(status=429, error_details=[retry_info("1.5s")]), ErrorKind.RATE_LIMITED, 1.5),
        (Reply(status=429), ErrorKind.RATE_LIMITED, None),
        (Reply(status=500), ErrorKind.SERVER_ERROR, None),
        (Reply(status=503, error_message="The model is overloaded."), ErrorKind.SERVER_ERROR, None),
        (Reply(status=504), ErrorKind.TIMEOUT, None),
        (Reply(status=404, error_message="models/x is not found"), ErrorKind.NOT_FOUND, None),
        (
            Reply(
                status=400,
                error_message=(
                    "The input token count (2000000) exceeds the maximum number of tokens "
                    "allowed (1048576)."
                ),
            ),
            ErrorKind.CONTEXT_LENGTH,
            None,
        ),
        (
            Reply(status=400, error_message="Invalid JSON payload received."),
            ErrorKind.BAD_REQUEST,
            None,
        ),
    ],
)
async def test_errors(
    provider: GeminiProvider,
    fake: GeminiFake,
    reply: Reply,
    kind: ErrorKind,
    retry_after: float | None,
) -> None:
    fake.push(reply)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(MODEL, chat())
    error = caught.value
    assert error.kind is kind
    assert error.status == reply.status
    assert error.retry_after == retry_after
    assert error.provider == "gemini"
    assert error.model == MODEL.model
    assert len(fake.requests) == 1  # the SDK did not retry on its own


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=401, error_message=f"Request had invalid key {API_KEY}"),
        Reply(status=403, error_message=f"Permission denied for {API_KEY}"),
        # Gemini's real answer to a wrong key: 400 with reason API_KEY_INVALID.
        Reply(
            status=400,
            error_message=f"API key not valid ({API_KEY}). Please pass a valid API key.",
            error_details=[error_info("API_KEY_INVALID")],
        ),
    ],
)
async def test_authentication_errors_do_not_echo(
    provider: GeminiProvider, fake: GeminiFake, reply: Reply
) -> None:
    fake.push(reply)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(MODEL, chat())
    assert caught.value.kind is ErrorKind.AUTHENTICATION
    assert API_KEY not in caught.value.message
    assert API_KEY not in repr(caught.value)


async def test_per_model_timeout(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(delay=1.0))
    model = MODEL.model_copy(update={"timeout_s": 0.2})
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await provider.complete(model, chat())
    assert caught.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 0.8
    assert fake.last["headers"]["x-server-timeout"] == "1"
    assert len(fake.requests) == 1


async def test_stream_stall_times_out(provider: GeminiProvider, fake: GeminiFake) -> None:
    fake.push(Reply(text="a b c", text_chunks=3, chunk_delay=1.0))
    model = MODEL.model_copy(update={"timeout_s": 0.2})
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await collect(provider, chat(), model)
    assert caught.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 0.8


async def test_unreachable_server() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = GeminiProvider(
        "gemini", GeminiConfig(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}")
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(MODEL, chat())
        assert caught.value.kind is ErrorKind.SERVER_ERROR
        with pytest.raises(ProviderError) as caught:
            await collect(provider, chat())
        assert caught.value.kind is ErrorKind.SERVER_ERROR
    finally:
        await provider.aclose()


def test_config_shape() -> None:
    config = GeminiConfig.model_validate(
        {
            "type": "gemini",
            "api_key": "secret-value",
            "base_url": "http://x",
            "instrumentation": "traceloop",
        }
    )
    assert config.api_key is not None
    assert config.api_key.get_secret_value() == "secret-value"
    assert "secret-value" not in repr(config)
    with pytest.raises(ValueError):
        GeminiConfig.model_validate({"type": "gemini", "apikey": "k"})
