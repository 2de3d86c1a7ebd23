"""The official openai SDK, unmodified, as a client of /v1/chat/completions and /v1/models."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.openai_fake import Reply, Stream

SIM = """
providers:
  sim: {type: simulated, seed: 1}
models:
  fast: {provider: sim, model: sim-fast, input_price: 1.0, output_price: 2.0}
routes:
  default: {failover: [fast]}
"""


@pytest.fixture
def client(serve_gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=serve_gateway(SIM) + "/v1", api_key="unused", max_retries=0)


def test_non_stream_by_route_alias_and_provider_model(client: openai.OpenAI) -> None:
    for name in ("default", "fast", "sim/sim-fast"):
        response = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Write a haiku about rain"}]
        )
        choice = response.choices[0]
        assert choice.message.role == "assistant"
        assert choice.message.content
        assert choice.finish_reason == "stop"
        assert response.model == "sim-fast"  # the model that answered, not the route's name
        assert response.usage.total_tokens == (
            response.usage.prompt_tokens + response.usage.completion_tokens
        )
        assert response.usage.completion_tokens > 0


def test_same_prompt_same_simulated_answer(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "same question"}]
    first = client.chat.completions.create(model="fast", messages=ask)
    second = client.chat.completions.create(model="fast", messages=ask)
    assert first.choices[0].message.content == second.choices[0].message.content


def test_stream_matches_non_stream(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Tell me a story"}]
    whole = client.chat.completions.create(model="fast", messages=ask)
    chunks = list(
        client.chat.completions.create(
            model="fast", messages=ask, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert {c.model for c in chunks} == {"sim-fast"}


def test_unknown_model_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    assert caught.value.body["type"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}], stream=True
        )


def test_models_lists_routes_and_aliases(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["default", "fast"]


def test_tool_call_round_trip_through_simulated(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    first = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,
        tool_choice="required",
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    second = client.chat.completions.create(
        model="fast",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'},
        ],
        tools=tools,
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


def test_router_headers_on_both_endpoints(serve_gateway) -> None:
    import httpx

    base = serve_gateway(SIM)
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    for path, body in (("/v1/chat", ask), ("/v1/chat/completions", {**ask, "model": "default"})):
        response = httpx.post(base + path, json=body)
        assert response.status_code == 200
        assert response.headers["x-router-route"] == "default"
        assert response.headers["x-router-provider"] == "sim"
        assert response.headers["x-router-model"] == "sim-fast"


def test_upstream_model_reported_through_openai_adapter(serve_gateway, openai_fake) -> None:
    fake, url = openai_fake
    fake.push(Reply(text="pong", model="gpt-4o-2024-08-06"), Stream(model="gpt-4o-2024-08-06"))
    base = serve_gateway(
        f"""
providers:
  oai: {{type: openai, base_url: "{url}/v1", api_key: "${{KEY}}"}}
models:
  smart: {{provider: oai, model: gpt-4o}}
""",
        env={"KEY": "sk-test-secret"},
    )
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    response = client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "ping"}]
    )
    assert response.model == "gpt-4o-2024-08-06"
    assert response.choices[0].message.content == "pong"
    assert fake.log[0].headers["authorization"] == "Bearer sk-test-secret"
    chunks = list(
        client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "ping"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there."
    assert chunks[-1].model == "gpt-4o-2024-08-06"
