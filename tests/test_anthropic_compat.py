"""The official anthropic SDK, unmodified, as a client of /v1/messages and its count_tokens.

Each scenario runs against routes served by the OpenAI, Anthropic, Gemini and Bedrock fakes (each
adapter's own SDK on the wire), so the Anthropic dialect is proven whatever provider answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import anthropic_fake, gemini_fake, openai_fake
from tests.fakes.bedrock_fake import BedrockFake
from tests.fakes.server import serve_app

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@dataclass
class Backend:
    """One fake provider behind the gateway's model alias `m`, scripted in the test's terms."""

    fake: Any
    config: str  # the `providers:` and `models:` YAML
    text: Callable[[str, bool], None]  # script a text answer (streamed or not)
    tool: Callable[[str, dict[str, Any], bool], None]  # script one tool call
    fail: Callable[[], None]  # script an overloaded upstream
    last_body: Callable[[], dict[str, Any]]
    system_seen: Callable[[], str]


def _openai(stack: ExitStack) -> Backend:
    fake = openai_fake.OpenAIFake()
    url = stack.enter_context(serve_app(fake.app))

    def text(answer: str, stream: bool) -> None:
        half = len(answer) // 2
        chunks = [answer[:half], answer[half:]]
        fake.push(openai_fake.Stream(chunks=chunks) if stream else openai_fake.Reply(text=answer))

    def tool(name: str, args: dict[str, Any], stream: bool) -> None:
        calls = [{"name": name, "arguments": json.dumps(args)}]
        if stream:
            fake.push(openai_fake.Stream(chunks=[], tool_calls=calls, finish="tool_calls"))
        else:
            fake.push(openai_fake.Reply(text=None, tool_calls=calls, finish="tool_calls"))

    return Backend(
        fake=fake,
        config=f"""
providers:
  up: {{type: openai, base_url: "{url}/v1", api_key: sk-test}}
models:
  m: {{provider: up, model: gpt-4o}}
""",
        text=text,
        tool=tool,
        fail=lambda: fake.push(openai_fake.Fail(503, "down", type="server_error")),
        last_body=lambda: fake.bodies[-1],
        system_seen=lambda: fake.bodies[-1]["messages"][0]["content"],
    )


def _anthropic(stack: ExitStack) -> Backend:
    fake = anthropic_fake.AnthropicFake(api_key="test-key")
    url = stack.enter_context(serve_app(fake.app))
    reply = anthropic_fake.Reply
    return Backend(
        fake=fake,
        config=f"""
providers:
  up: {{type: anthropic, base_url: "{url}", api_key: test-key}}
models:
  m: {{provider: up, model: claude-sonnet-4-6}}
""",
        text=lambda answer, stream: fake.queue(reply.answer(answer)),
        tool=lambda name, args, stream: fake.queue(reply.tool_use(name, args, id="toolu_01")),
        fail=lambda: fake.queue(reply.fail(529, "Overloaded")),
        last_body=lambda: fake.last.body,
        system_seen=lambda: fake.last.body["system"],
    )


def _gemini(stack: ExitStack) -> Backend:
    fake = gemini_fake.GeminiFake()
    url = stack.enter_context(serve_app(fake.app))
    reply = gemini_fake.Reply

    def tool(name: str, args: dict[str, Any], stream: bool) -> None:
        fake.push(reply(text=None, function_calls=[gemini_fake.FunctionCallSpec(name, args)]))

    return Backend(
        fake=fake,
        config=f"""
providers:
  up: {{type: gemini, base_url: "{url}", api_key: test-gemini-key}}
models:
  m: {{provider: up, model: gemini-2.5-flash}}
""",
        text=lambda answer, stream: fake.push(reply(text=answer)),
        tool=tool,
        fail=lambda: fake.push(reply(status=503, error_message="down")),
        last_body=lambda: fake.last["body"],
        system_seen=lambda: fake.last["body"]["systemInstruction"]["parts"][0]["text"],
    )


def _bedrock(stack: ExitStack) -> Backend:
    fake = BedrockFake()
    url = stack.enter_context(serve_app(fake.app))
    return Backend(
        fake=fake,
        config=f"""
providers:
  up:
    type: bedrock
    region: eu-west-3
    endpoint_url: "{url}"
    access_key_id: AKIAFAKEFAKEFAKE1234
    secret_access_key: fake-secret
models:
  m: {{provider: up, model: "anthropic.claude-3-5-sonnet-20240620-v1:0"}}
""",
        text=lambda answer, stream: fake.add_text(answer),
        tool=lambda name, args, stream: fake.add_tool_use(name, args) and None,
        fail=lambda: fake.add_error(503, "ServiceUnavailableException", "down"),
        last_body=lambda: fake.requests[-1].body,
        system_seen=lambda: fake.requests[-1].body["system"][0]["text"],
    )


BACKENDS = {"openai": _openai, "anthropic": _anthropic, "gemini": _gemini, "bedrock": _bedrock}


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, stack: ExitStack) -> Backend:
    return BACKENDS[request.param](stack)


@pytest.fixture
def client(backend: Backend, serve_gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=serve_gateway(backend.config), api_key="k", max_retries=0)


# ---- against every provider ---------------------------------------------------------------------


def test_non_stream_text(backend: Backend, client: anthropic.Anthropic) -> None:
    backend.text("It is sunny in Paris.", False)
    message = client.messages.create(model="m", max_tokens=200, messages=ASK)
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "It is sunny in Paris."
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.model  # the model that answered, as its provider reports it
    assert message.model != "m"


def test_stream_text(backend: Backend, client: anthropic.Anthropic) -> None:
    backend.text("It is sunny in Paris.", True)
    with client.messages.stream(model="m", max_tokens=200, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "It is sunny in Paris."
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_system_prompt_reaches_the_provider(backend: Backend, client: anthropic.Anthropic) -> None:
    backend.text("Oui.", False)
    client.messages.create(model="m", max_tokens=50, system="Answer in French.", messages=ASK)
    assert backend.system_seen() == "Answer in French."
    backend.text("Oui.", False)
    blocks = [{"type": "text", "text": "Answer in French."}, {"type": "text", "text": "Be brief."}]
    client.messages.create(model="m", max_tokens=50, system=blocks, messages=ASK)
    assert backend.system_seen() == "Answer in French.\n\nBe brief."


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_tool_use_round_trip(backend: Backend, client: anthropic.Anthropic, stream: bool) -> None:
    backend.tool("get_weather", {"city": "Paris"}, stream)
    ask = {"model": "m", "max_tokens": 200, "messages": ASK, "tools": [WEATHER]}
    if stream:
        with client.messages.stream(**ask, tool_choice={"type": "any"}) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(**ask, tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id

    backend.text("18 degrees and sunny.", False)
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 18 C"}
    history = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [result]},
    ]
    second = client.messages.create(**{**ask, "messages": history})
    assert second.content[0].text == "18 degrees and sunny." and second.stop_reason == "end_turn"
    sent = json.dumps(backend.last_body())
    assert "sunny, 18 C" in sent and "get_weather" in sent


def test_unknown_model_is_not_found(backend: Backend, client: anthropic.Anthropic) -> None:
    for stream in (False, True):
        with pytest.raises(anthropic.NotFoundError) as caught:
            client.messages.create(model="nope", max_tokens=10, messages=ASK, stream=stream)
        assert caught.value.status_code == 404
        assert caught.value.type == "not_found_error"
        assert "nope" in caught.value.api_message


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_upstream_failure_is_overloaded(
    backend: Backend, client: anthropic.Anthropic, stream: bool
) -> None:
    backend.fail()
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(model="m", max_tokens=10, messages=ASK, stream=stream)
    error = caught.value
    assert error.status_code == 529 and error.type == "overloaded_error"
    assert error.error_code == "server_error"
    [attempt] = error.body["error"]["details"]["attempts"]
    assert attempt["target"] == "m" and attempt["error"] == "server_error"


# ---- the wire, exactly -------------------------------------------------------------------------


def _raw_events(base: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    response = httpx.post(base + "/v1/messages", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[len("data: ") :])
        assert payload["type"] == name[len("event: ") :]
        events.append((payload["type"], payload))
    return events


def test_stream_event_sequence_for_text_then_tool(serve_gateway, stack: ExitStack) -> None:
    backend = _anthropic(stack)
    base = serve_gateway(backend.config)
    backend.fake.queue(
        anthropic_fake.Reply.tool_use("get_weather", {"city": "Paris"}, text="Let me look.")
    )
    events = _raw_events(base, {"model": "m", "max_tokens": 99, "messages": ASK})
    names = [name for name, _ in events]
    text_deltas = names.count("content_block_delta") - 1
    assert text_deltas >= 1
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * text_deltas,
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [payload for _, payload in events]
    start = data[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["model"] == "claude-sonnet-4-6" and start["usage"]["input_tokens"] > 0
    assert data[2] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(d["delta"]["text"] for d in data[3 : 3 + text_deltas])
    assert text == "Let me look."
    assert all(d["index"] == 0 for d in data[3 : 4 + text_deltas])
    tool_start, tool_delta, tool_stop = data[4 + text_deltas : 7 + text_deltas]
    assert tool_start["index"] == tool_delta["index"] == tool_stop["index"] == 1
    assert tool_start["content_block"] == {
        "type": "tool_use",
        "id": "toolu_fake00",
        "name": "get_weather",
        "input": {},
    }
    assert tool_delta["delta"]["type"] == "input_json_delta"
    assert json.loads(tool_delta["delta"]["partial_json"]) == {"city": "Paris"}
    message_delta = data[-2]
    assert message_delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert message_delta["usage"] == {"input_tokens": 11, "output_tokens": 7}


def test_error_mid_stream_is_an_error_event(serve_gateway, stack: ExitStack) -> None:
    backend = _anthropic(stack)
    client = anthropic.Anthropic(base_url=serve_gateway(backend.config), api_key="k", max_retries=0)
    # Four events in: message_start, ping, the text block's start and first delta.
    backend.fake.queue(anthropic_fake.Reply.answer("a long answer, cut short", error_after=4))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        for event in client.messages.create(model="m", max_tokens=9, messages=ASK, stream=True):
            seen.append(event.type)
    assert seen[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert "message_stop" not in seen
    assert caught.value.type == "overloaded_error"
    assert caught.value.body["error"]["details"]["error_code"] == "server_error"


def test_max_tokens_and_user_reach_the_provider(serve_gateway, stack: ExitStack) -> None:
    backend = _openai(stack)
    client = anthropic.Anthropic(base_url=serve_gateway(backend.config), api_key="k", max_retries=0)
    backend.fake.push(openai_fake.Reply(text="cut", finish="length"))
    message = client.messages.create(
        model="m",
        max_tokens=3,
        messages=ASK,
        stop_sequences=["END"],
        metadata={"user_id": "user-42"},
        extra_body={"temperature": 0.5},
    )
    assert message.stop_reason == "max_tokens"
    sent = backend.fake.bodies[-1]
    assert sent["user"] == "user-42" and sent["temperature"] == 0.5
    assert (
        sent["stop"] == ["END"] and sent.get("max_tokens", sent.get("max_completion_tokens")) == 3
    )


# ---- one pipeline, three dialects ---------------------------------------------------------------

FAILOVER = """
providers:
  up: {{type: openai, base_url: "{url}/v1", api_key: sk-test}}
  sim: {{type: simulated, seed: 3}}
models:
  first: {{provider: up, model: gpt-4o}}
  second: {{provider: sim, model: sim-fast}}
routes:
  chain: {{failover: [first, second]}}
"""


def _without_timing(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = json.dumps(decisions)
    stripped = json.loads(text)
    for decision in stripped:
        for attempt in decision["detail"].get("attempts", []):
            attempt.pop("latency_ms")
    return stripped


def test_same_request_same_decisions_on_every_endpoint(serve_gateway, openai_fake) -> None:
    # Trace shape equality across the three endpoints is to be checked once tracing lands.
    fake, url = openai_fake
    base = serve_gateway(FAILOVER.format(url=url))
    question = "Which route answers?"
    asks = {
        "/v1/chat": {"route": "chain", "messages": [{"role": "user", "content": question}]},
        "/v1/chat/completions": {
            "model": "chain",
            "messages": [{"role": "user", "content": question}],
        },
        "/v1/messages": {
            "model": "chain",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": question}],
        },
    }
    seen = {}
    for path, body in asks.items():
        fake.push(openai_fake_fail())
        response = httpx.post(base + path, json=body)
        assert response.status_code == 200, response.text
        result = response.json()
        decisions = result["decisions"] if path == "/v1/chat" else result["router"]["decisions"]
        headers = {k: v for k, v in response.headers.items() if k.startswith("x-router-")}
        seen[path] = (_without_timing(decisions), headers)
    first = seen["/v1/chat"]
    assert first[0][0]["policy"] == "failover" and first[0][0]["outcome"] == "second"
    assert [a["target"] for a in first[0][0]["detail"]["attempts"]] == ["first", "second"]
    assert first[1]["x-router-target"] == "second"
    assert seen["/v1/chat/completions"] == first
    assert seen["/v1/messages"] == first
    assert len(fake.log) == 3


def openai_fake_fail() -> openai_fake.Fail:
    return openai_fake.Fail(500, "down", type="server_error")


# ---- the edges: keys, bad input, estimates ------------------------------------------------------

SIM = """
server:
  api_keys: ["sk-router-1"]
providers:
  sim: {type: simulated, seed: 1}
models:
  fast: {provider: sim, model: sim-fast}
"""


def test_x_api_key_or_bearer_and_router_headers(serve_gateway) -> None:
    base = serve_gateway(SIM)
    by_key = anthropic.Anthropic(base_url=base, api_key="sk-router-1", max_retries=0)
    by_bearer = anthropic.Anthropic(base_url=base, auth_token="sk-router-1", max_retries=0)
    for client in (by_key, by_bearer):
        raw = client.messages.with_raw_response.create(model="fast", max_tokens=20, messages=ASK)
        assert raw.headers["x-router-route"] == "fast"
        assert raw.headers["x-router-provider"] == "sim"
        assert raw.headers["x-router-model"] == "sim-fast"
        assert raw.parse().model == "sim-fast"
    wrong = anthropic.Anthropic(base_url=base, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model="fast", max_tokens=20, messages=ASK)
    assert caught.value.type == "authentication_error"
    assert caught.value.error_code == "invalid_api_key"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"model": "fast", "messages": ASK}, "max_tokens"),
        ({"model": "fast", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "fast", "max_tokens": 5, "messages": ASK, "temperature": 1.5}, "temperature"),
        (
            {
                "model": "fast",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            "'image' are not supported",
        ),
        (
            {
                "model": "fast",
                "max_tokens": 5,
                "messages": ASK,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "server tools",
        ),
        (
            {"model": "fast", "max_tokens": 5, "messages": ASK, "tool_choice": {"type": "tool"}},
            "needs a name",
        ),
    ],
)
def test_bad_requests_answer_in_anthropic_shape(
    serve_gateway, body: dict[str, Any], fragment: str
) -> None:
    base = serve_gateway(SIM)
    response = httpx.post(base + "/v1/messages", json=body, headers={"x-api-key": "sk-router-1"})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert fragment in error["error"]["message"]


def test_other_endpoints_keep_the_openai_envelope(serve_gateway) -> None:
    base = serve_gateway(SIM)
    auth = {"x-api-key": "sk-router-1"}
    on_messages = httpx.post(
        base + "/v1/messages", json={"model": "x", "max_tokens": 1, "messages": ASK}, headers=auth
    )
    on_openai = httpx.post(
        base + "/v1/chat/completions", json={"model": "x", "messages": ASK}, headers=auth
    )
    assert on_messages.status_code == on_openai.status_code == 404
    assert on_messages.json()["error"]["type"] == "not_found_error"
    assert on_openai.json()["error"]["type"] == "not_found"
    assert "type" not in on_openai.json()


def test_count_tokens_is_an_estimate(serve_gateway) -> None:
    client = anthropic.Anthropic(base_url=serve_gateway(SIM), api_key="sk-router-1")
    short = client.messages.count_tokens(model="fast", messages=ASK)
    longer = client.messages.count_tokens(
        model="fast", system="You are a meteorologist. " * 20, messages=ASK, tools=[WEATHER]
    )
    assert 0 < short.input_tokens < longer.input_tokens
    assert short.model_extra == {"estimated": True}
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=ASK)


def test_unapplied_fields_are_noted_in_the_decisions(serve_gateway) -> None:
    client = anthropic.Anthropic(base_url=serve_gateway(SIM), api_key="sk-router-1")
    message = client.messages.create(
        model="fast",
        max_tokens=2048,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    notes = [d for d in message.model_extra["router"]["decisions"] if d["policy"] == "adapter"]
    assert notes and "thinking is not applied by llm-router" in notes[0]["detail"]["notes"]


def test_oversized_body_raises_the_sdks_too_large_error(serve_gateway) -> None:
    # Refused by the body limit before any router runs: the SDK's class comes from the status.
    base = serve_gateway(SIM.replace('api_keys: ["sk-router-1"]', "max_body_bytes: 2048"))
    client = anthropic.Anthropic(base_url=base, api_key="sk-router-1", max_retries=0)
    big = [{"role": "user", "content": "x" * 4096}]
    with pytest.raises(anthropic.ContentTooLargeError):
        client.messages.create(model="fast", max_tokens=5, messages=big)
