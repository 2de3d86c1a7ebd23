"""The Bedrock adapter, driving real boto3 against the local Converse/ConverseStream fake."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.chat import (
    ChatRequest,
    FunctionCall,
    FunctionSpec,
    Message,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from app.errors import ErrorKind, ProviderError
from providers.base import ModelConfig
from providers.bedrock import BedrockConfig, BedrockProvider
from tests.fakes.bedrock_fake import (
    BedrockFake,
    Behaviour,
    encode_event,
    encode_exception,
    encode_message,
)
from tests.fakes.server import serve_app

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ACCESS_KEY = "AKIAFAKEFAKEFAKE1234"
SECRET_KEY = "fake-secret-key-do-not-leak"
REGION = "eu-west-3"


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[BedrockFake, str]]:
    fake = BedrockFake()
    with serve_app(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(fake_server: tuple[BedrockFake, str]) -> BedrockFake:
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests pass credentials through config; nothing from the machine may interfere.
    for var in (
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)


def make_provider(url: str, **overrides: Any) -> BedrockProvider:
    config = BedrockConfig(
        region=REGION,
        endpoint_url=url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        **overrides,
    )
    return BedrockProvider("bedrock", config)


@pytest.fixture(scope="module")
def shared_provider(fake_server: tuple[BedrockFake, str]) -> Iterator[BedrockProvider]:
    # Built once: a boto3 session and client cost ~0.1 s. The provider holds no event loop.
    p = make_provider(fake_server[1])
    yield p
    asyncio.run(p.aclose())


@pytest.fixture
def provider(shared_provider: BedrockProvider, fake: BedrockFake) -> BedrockProvider:
    return shared_provider


def model(**kw: Any) -> ModelConfig:
    return ModelConfig(provider="bedrock", model=kw.pop("model", MODEL_ID), **kw)


def chat(*messages: Message, **kw: Any) -> ChatRequest:
    if not messages:
        messages = (Message(role="user", content="Hi there"),)
    return ChatRequest(messages=list(messages), **kw)


async def collect(agen: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in agen]


WEATHER = Tool(
    function=FunctionSpec(
        name="get_weather",
        description="Weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
)


# ---- the event-stream encoder, proved by botocore's decoder -------------------------------------


def test_encoder_frames_decode_with_botocore() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(encode_event("messageStart", {"role": "assistant"}))
    buffer.add_data(encode_exception("throttlingException", "slow down"))
    first, second = list(buffer)
    assert first.headers == {
        ":event-type": "messageStart",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload)["role"] == "assistant"
    assert second.headers[":message-type"] == "exception"
    assert second.headers[":exception-type"] == "throttlingException"
    assert json.loads(second.payload) == {"message": "slow down"}


def test_encoder_crc_is_checked() -> None:
    frame = bytearray(encode_event("messageStop", {"stopReason": "end_turn"}))
    frame[-6] ^= 0xFF  # corrupt one payload byte: the message CRC no longer matches
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(frame))
    with pytest.raises(ChecksumMismatch):
        list(buffer)


@settings(max_examples=60, deadline=None)
@given(
    headers=st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255),
        st.text(max_size=50),
        max_size=4,
    ),
    payload=st.binary(max_size=300),
    split=st.integers(min_value=0, max_value=400),
)
def test_encoder_round_trips_any_message(
    headers: dict[str, str], payload: bytes, split: int
) -> None:
    data = encode_message(headers, payload)
    total, headers_length = struct.unpack("!II", data[:8])
    assert total == len(data)
    buffer = EventStreamBuffer()
    buffer.add_data(data[:split])  # arrives in two pieces, like TCP would deliver it
    early = list(buffer)
    buffer.add_data(data[split:])
    (message,) = early + list(buffer)
    assert message.headers == headers
    assert message.payload == payload
    assert message.prelude.headers_length == headers_length


# ---- config --------------------------------------------------------------------------------


def test_config_shape() -> None:
    config = BedrockConfig.model_validate({"type": "bedrock", "region": "us-east-1"})
    assert config.max_concurrency == 16
    assert config.access_key_id is None
    with pytest.raises(ValidationError):
        BedrockConfig.model_validate({"type": "bedrock", "access_key_id": "AKIA"})
    with pytest.raises(ValidationError):
        BedrockConfig.model_validate({"type": "openai"})
    with pytest.raises(ValidationError):
        BedrockConfig.model_validate({"type": "bedrock", "regoin": "us-east-1"})
    shown = repr(BedrockConfig(access_key_id="AKIA", secret_access_key=SECRET_KEY))
    assert SECRET_KEY not in shown


# ---- non-streaming -------------------------------------------------------------------------


async def test_complete_text(fake: BedrockFake, provider: BedrockProvider) -> None:
    fake.add_text("Bonjour!", usage=(21, 4))
    result = await provider.complete(model(), chat())
    assert result.message.content == "Bonjour!"
    assert result.message.tool_calls == []
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (21, 4)
    assert result.usage.total_tokens == 25 and not result.usage.estimated
    assert result.model == MODEL_ID

    (sent,) = fake.requests
    assert sent.operation == "converse"
    assert sent.model_id == MODEL_ID
    assert "%3A" in sent.raw_path  # botocore percent-encodes the ':' of the model id
    assert sent.body["messages"] == [{"role": "user", "content": [{"text": "Hi there"}]}]
    assert "system" not in sent.body and "toolConfig" not in sent.body
    # SigV4 with the configured key, for the configured region and Bedrock's signing name.
    auth = sent.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert f"/{REGION}/bedrock/aws4_request" in auth


async def test_model_arn_with_slashes_routes(fake: BedrockFake, provider: BedrockProvider) -> None:
    arn = "arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.anthropic.claude-v1:0"
    result = await provider.complete(model(model=arn), chat())
    assert result.model == arn
    assert fake.requests[0].model_id == arn


async def test_system_and_inference_config(fake: BedrockFake, provider: BedrockProvider) -> None:
    request = chat(
        Message(role="system", content="Be terse."),
        Message(role="system", content="Answer in French."),
        Message(role="user", content="One"),
        Message(role="user", content="Two"),
        temperature=0.3,
        top_p=0.9,
        max_tokens=123,
        stop=["END", "STOP"],
    )
    result = await provider.complete(model(), request)
    body = fake.requests[0].body
    assert body["system"] == [{"text": "Be terse."}, {"text": "Answer in French."}]
    # consecutive user messages merge into one turn
    assert body["messages"] == [{"role": "user", "content": [{"text": "One"}, {"text": "Two"}]}]
    assert body["inferenceConfig"] == {
        "maxTokens": 123,
        "temperature": 0.3,
        "topP": 0.9,
        "stopSequences": ["END", "STOP"],
    }
    assert result.notes == []


async def test_model_max_tokens_and_temperature_clamp(
    fake: BedrockFake, provider: BedrockProvider
) -> None:
    result = await provider.complete(model(max_tokens=77), chat(temperature=1.7))
    assert fake.requests[0].body["inferenceConfig"] == {"maxTokens": 77, "temperature": 1.0}
    assert any("temperature" in note for note in result.notes)


async def test_tool_call_round_trip(fake: BedrockFake, provider: BedrockProvider) -> None:
    tool = fake.add_tool_use("get_weather", {"city": "Paris"}, text="Let me look.")
    first = await provider.complete(model(), chat(tools=[WEATHER], tool_choice="auto"))
    assert first.finish_reason == "tool_calls"
    assert first.message.content == "Let me look."
    (call,) = first.message.tool_calls
    assert call.id == tool.tool_use_id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake.requests[0].body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "inputSchema": {"json": WEATHER.function.parameters},
                }
            }
        ],
        "toolChoice": {"auto": {}},
    }

    second_call = ToolCall(
        id="tooluse_2", function=FunctionCall(name="get_weather", arguments="{}")
    )
    follow_up = chat(
        Message(role="user", content="Weather in Paris and Lyon?"),
        Message(role="assistant", content=None, tool_calls=[call, second_call]),
        Message(role="tool", tool_call_id=call.id, content="18C, sunny"),
        Message(role="tool", tool_call_id="tooluse_2", content=""),
        tools=[WEATHER],
        tool_choice="required",
    )
    fake.add_text("Paris is sunny.")
    second = await provider.complete(model(), follow_up)
    assert second.message.content == "Paris is sunny."
    body = fake.requests[1].body
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Paris and Lyon?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": call.id,
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
                {"toolUse": {"toolUseId": "tooluse_2", "name": "get_weather", "input": {}}},
            ],
        },
        {
            "role": "user",  # consecutive tool results merge into one user turn
            "content": [
                {"toolResult": {"toolUseId": call.id, "content": [{"text": "18C, sunny"}]}},
                {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "(no output)"}]}},
            ],
        },
    ]


async def test_specific_tool_choice(fake: BedrockFake, provider: BedrockProvider) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    await provider.complete(model(), chat(tools=[WEATHER], tool_choice=choice))
    assert fake.requests[0].body["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}


async def test_tool_choice_none(fake: BedrockFake, provider: BedrockProvider) -> None:
    result = await provider.complete(model(), chat(tools=[WEATHER], tool_choice="none"))
    assert "toolConfig" not in fake.requests[0].body
    assert any("none" in note for note in result.notes)

    # With tool blocks in the history Converse insists on toolConfig: keep the tools, no choice.
    call = ToolCall(id="t1", function=FunctionCall(name="get_weather", arguments='{"city":"X"}'))
    history = chat(
        Message(role="user", content="?"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="t1", content="rain"),
        tools=[WEATHER],
        tool_choice="none",
    )
    result = await provider.complete(model(), history)
    assert fake.requests[1].body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    assert "toolChoice" not in fake.requests[1].body["toolConfig"]
    assert result.notes


# ---- streaming -----------------------------------------------------------------------------


async def test_stream_text(fake: BedrockFake, provider: BedrockProvider) -> None:
    fake.add_text("Hello, streaming world", text_chunks=["Hello", ", streaming", " world"])
    events = await collect(provider.stream(model(), chat(max_tokens=50)))
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "Hello",
        ", streaming",
        " world",
    ]
    finish = events[-1]
    assert isinstance(finish, StreamFinish)
    assert sum(isinstance(e, StreamFinish) for e in events) == 1
    assert finish.finish_reason == "stop"
    assert not finish.truncated
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (12, 7)
    assert not finish.usage.estimated
    assert finish.model == MODEL_ID
    sent = fake.requests[0]
    assert sent.operation == "converse-stream"
    assert sent.body["inferenceConfig"] == {"maxTokens": 50}


async def test_stream_tool_use_fragments(fake: BedrockFake, provider: BedrockProvider) -> None:
    tool = fake.add_tool_use(
        "get_weather",
        {"city": "Paris", "unit": "C"},
        text="Checking.",
        fragments=['{"ci', 'ty": "Par', 'is", "unit"', ': "C"}'],
    )
    events = await collect(provider.stream(model(), chat(tools=[WEATHER])))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Checking."
    (delta,) = [e for e in events if isinstance(e, ToolCallDelta)]
    assert delta.index == 0
    assert delta.tool_call.id == tool.tool_use_id
    assert delta.tool_call.function.name == "get_weather"
    assert json.loads(delta.tool_call.function.arguments) == {"city": "Paris", "unit": "C"}
    finish = events[-1]
    assert isinstance(finish, StreamFinish) and finish.finish_reason == "tool_calls"


async def test_stream_without_metadata_estimates_usage(
    fake: BedrockFake, provider: BedrockProvider
) -> None:
    fake.add_text("Some words here", usage=None)
    events = await collect(provider.stream(model(), chat()))
    finish = events[-1]
    assert isinstance(finish, StreamFinish)
    assert finish.usage.estimated and finish.usage.output_tokens > 0
    assert not finish.truncated


@pytest.mark.parametrize("stop_reason, expected", [
    ("max_tokens", "length"),
    ("guardrail_intervened", "content_filter"),
    ("content_filtered", "content_filter"),
    ("stop_sequence", "stop"),
])  # fmt: skip
async def test_stop_reasons(
    fake: BedrockFake, provider: BedrockProvider, stop_reason: str, expected: str
) -> None:
    fake.add_text("x", stop_reason=stop_reason)
    assert (await provider.complete(model(), chat())).finish_reason == expected
    fake.add_text("x", stop_reason=stop_reason)
    finish = (await collect(provider.stream(model(), chat())))[-1]
    assert isinstance(finish, StreamFinish) and finish.finish_reason == expected


async def test_cut_stream_is_truncated(fake: BedrockFake, provider: BedrockProvider) -> None:
    # messageStart + two text deltas, then the body ends cleanly without messageStop.
    fake.add_text("abcdef", text_chunks=["abc", "def"], cut_after=3)
    events = await collect(provider.stream(model(), chat()))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["abc", "def"]
    finish = events[-1]
    assert isinstance(finish, StreamFinish) and finish.truncated


async def test_dropped_connection_is_truncated(
    fake: BedrockFake, provider: BedrockProvider
) -> None:
    fake.add_text("abcdef", text_chunks=["abc", "def"], drop_after=2)
    events = await collect(provider.stream(model(), chat()))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["abc"]
    finish = events[-1]
    assert isinstance(finish, StreamFinish) and finish.truncated


async def test_empty_stream_is_a_server_error(fake: BedrockFake, provider: BedrockProvider) -> None:
    fake.add(Behaviour(events=[]))
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(model(), chat()))
    assert info.value.kind is ErrorKind.SERVER_ERROR


@pytest.mark.parametrize("exception_type, kind", [
    ("throttlingException", ErrorKind.RATE_LIMITED),
    ("modelStreamErrorException", ErrorKind.SERVER_ERROR),
    ("internalServerException", ErrorKind.SERVER_ERROR),
    ("serviceUnavailableException", ErrorKind.SERVER_ERROR),
    ("validationException", ErrorKind.BAD_REQUEST),
])  # fmt: skip
async def test_exception_event_mid_stream(
    fake: BedrockFake, provider: BedrockProvider, exception_type: str, kind: ErrorKind
) -> None:
    fake.add_text(
        "abcdef",
        text_chunks=["abc", "def"],
        exception_after=2,
        stream_exception=(exception_type, "went wrong mid-stream"),
    )
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(model(), chat()):
            seen.append(event)
    assert info.value.kind is kind
    assert "went wrong mid-stream" in info.value.message
    assert info.value.provider == "bedrock" and info.value.model == MODEL_ID
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["abc"]
    assert not any(isinstance(e, StreamFinish) for e in seen)


# ---- errors --------------------------------------------------------------------------------

ERRORS = [
    (429, "ThrottlingException", "Too many requests, please wait.", ErrorKind.RATE_LIMITED),
    (503, "ServiceUnavailableException", "Service unavailable.", ErrorKind.SERVER_ERROR),
    (500, "InternalServerException", "Internal failure.", ErrorKind.SERVER_ERROR),
    (429, "ModelNotReadyException", "Model is not ready.", ErrorKind.SERVER_ERROR),
    (424, "ModelErrorException", "The model errored.", ErrorKind.SERVER_ERROR),
    (408, "ModelTimeoutException", "Model timed out.", ErrorKind.TIMEOUT),
    (404, "ResourceNotFoundException", "Model not found.", ErrorKind.NOT_FOUND),
    (400, "ValidationException", "Malformed input request.", ErrorKind.BAD_REQUEST),
    (
        400,
        "ValidationException",
        "Input is too long for requested model.",
        ErrorKind.CONTEXT_LENGTH,
    ),
    (
        400,
        "ValidationException",
        "prompt is too long: 250000 tokens > 200000 maximum",
        ErrorKind.CONTEXT_LENGTH,
    ),
    (400, "ValidationException", "Too many tokens in the request.", ErrorKind.CONTEXT_LENGTH),
]
AUTH_ERRORS = [
    (403, "AccessDeniedException"),
    (403, "UnrecognizedClientException"),
    (403, "ExpiredTokenException"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("status, error_type, message, kind", ERRORS)
async def test_errors_are_classified(
    fake: BedrockFake,
    provider: BedrockProvider,
    stream: bool,
    status: int,
    error_type: str,
    message: str,
    kind: ErrorKind,
) -> None:
    fake.add_error(status, error_type, message)
    with pytest.raises(ProviderError) as info:
        if stream:
            await collect(provider.stream(model(), chat()))
        else:
            await provider.complete(model(), chat())
    error = info.value
    assert error.kind is kind
    assert error.status == status
    assert error.message == message
    assert (error.provider, error.model) == ("bedrock", MODEL_ID)
    assert len(fake.requests) == 1  # the SDK did not retry


async def test_rate_limit_retry_after(fake: BedrockFake, provider: BedrockProvider) -> None:
    fake.add_error(429, "ThrottlingException", "Slow down.", headers={"Retry-After": "7"})
    with pytest.raises(ProviderError) as info:
        await provider.complete(model(), chat())
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert info.value.retry_after == 7


@pytest.mark.parametrize("status, error_type", AUTH_ERRORS)
async def test_auth_errors_never_echo(
    fake: BedrockFake, provider: BedrockProvider, status: int, error_type: str
) -> None:
    leaky = f"The security token {ACCESS_KEY} / {SECRET_KEY} for arn:aws:iam::1234:user/x is bad"
    fake.add_error(status, error_type, leaky)
    with pytest.raises(ProviderError) as info:
        await provider.complete(model(), chat())
    assert info.value.kind is ErrorKind.AUTHENTICATION
    assert info.value.status == status
    assert ACCESS_KEY not in info.value.message and SECRET_KEY not in info.value.message
    assert "arn:" not in info.value.message


async def test_connection_refused_is_server_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the call: nothing listens there
    p = make_provider(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ProviderError) as info:
            await p.complete(model(timeout_s=2), chat())
        assert info.value.kind is ErrorKind.SERVER_ERROR
    finally:
        await p.aclose()


# ---- timeouts, the pool, the event loop ------------------------------------------------------


async def test_per_model_timeout_complete(fake: BedrockFake, provider: BedrockProvider) -> None:
    fake.add_text("too late", delay_s=3)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await provider.complete(model(timeout_s=0.3), chat())
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 1.5


async def test_per_model_timeout_stream_start(fake: BedrockFake, provider: BedrockProvider) -> None:
    fake.add_text("too late", delay_s=3)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(model(timeout_s=0.3), chat()))
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 1.5


async def test_per_model_timeout_stream_stall(fake: BedrockFake, provider: BedrockProvider) -> None:
    # messageStart and the first delta come at once, then the upstream goes quiet.
    fake.add_text("abcdef", text_chunks=["abc", "def"], stall_after=2, stall_s=3)
    seen: list[StreamEvent] = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(model(timeout_s=0.4), chat()):
            seen.append(event)
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 1.5
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["abc"]


@pytest.mark.alone  # a 0.15 s bound on the loop's gaps: measured with no other test running
async def test_event_loop_stays_responsive(fake: BedrockFake, provider: BedrockProvider) -> None:
    fake.add_text("slow", delay_s=0.6)
    fake.add_text("slow stream", delay_s=0.3, chunk_delay_s=0.08)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        result = await provider.complete(model(), chat())
        events = await collect(provider.stream(model(), chat()))
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
    assert result.message.content == "slow"
    assert isinstance(events[-1], StreamFinish) and not events[-1].truncated
    assert elapsed >= 0.9
    # The ticker ran throughout: many ticks, never a long gap.
    assert len(ticks) > elapsed / 0.01 * 0.5
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.15


async def test_consumer_leaving_closes_upstream(fake_server: tuple[BedrockFake, str]) -> None:
    fake, url = fake_server
    fake.reset()
    p = make_provider(url, max_concurrency=1)  # one worker: it must come back for the next call
    try:
        fake.add_text("abcdef", text_chunks=["ab", "cd", "ef"], stall_after=2, stall_s=5)
        started = time.monotonic()
        agen = p.stream(model(timeout_s=10), chat())
        first = await anext(agen)
        assert isinstance(first, TextDelta) and first.text == "ab"
        await agen.aclose()
        for _ in range(100):  # the fake serves from its own thread: poll, up to 2 s
            if fake.streams_closed_early:
                break
            await asyncio.sleep(0.02)
        assert fake.streams_closed_early == 1
        result = await p.complete(model(timeout_s=10), chat())
        assert result.message.content == "Hello from the fake."
        assert time.monotonic() - started < 2  # well before the 5 s stall would have ended
    finally:
        await p.aclose()


async def test_pool_bounds_concurrency(fake_server: tuple[BedrockFake, str]) -> None:
    fake, url = fake_server
    fake.reset()
    p = make_provider(url, max_concurrency=2)
    try:
        for _ in range(5):
            fake.add_text("ok", delay_s=0.2)
        results = await asyncio.gather(*(p.complete(model(), chat()) for _ in range(5)))
        assert [r.message.content for r in results] == ["ok"] * 5
        assert fake.max_in_flight == 2
    finally:
        await p.aclose()
