"""Every provider type, through the gateway's own HTTP endpoints, against its wire-format fake.

One gateway serves one alias per provider type (OpenAI, Azure OpenAI, Anthropic, Gemini, Bedrock
and an Ollama-like OpenAI-compatible server), each provider entry pointed at its fake through its
base address. Each scenario runs for every provider, on `/v1/chat` and `/v1/chat/completions`,
streamed and not: the real SDK of each provider makes the upstream call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.config import parse_config
from app.errors import ErrorKind
from app.factory import create_app
from tests.conftest import sse_events
from tests.fakes.drivers import (
    ALL_DRIVERS,
    RETRY_AFTER_S,
    AzureDriver,
    Driver,
    LocalDriver,
)
from tests.fakes.server import serve_app

HASTY_S = 0.4  # timeout_s of each provider's "-hasty" alias
ENDPOINTS = ["chat", "completions"]
MODES = [False, True]  # stream?

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass
class World:
    base: str
    drivers: dict[str, Driver]
    old_azure: AzureDriver
    strict_local: LocalDriver

    def all(self) -> list[Driver]:
        return [*self.drivers.values(), self.old_azure, self.strict_local]


def gateway_yaml(drivers: list[Driver], old_azure: AzureDriver, strict_local: LocalDriver) -> str:
    providers = [f"  {d.name}: {d.provider_yaml()}" for d in drivers]
    providers += [
        f"  azure-old: {old_azure.provider_yaml()}",
        f"  local-strict: {strict_local.provider_yaml()}",
    ]
    models = []
    for d in drivers:
        models.append(f"  {d.name}: {d.model_yaml(timeout_s=5)}")
        models.append(f"  {d.name}-hasty: {d.model_yaml(timeout_s=HASTY_S)}")
    models += [
        # Azure, the deployment named by `model` alone: priced by the model that answers.
        "  azure-mini: {provider: azure-gpt, model: mini-prod}",
        "  azure-gone: {provider: azure-gpt, model: no-such-deployment}",
        "  azure-old-gpt: {provider: azure-old, model: gpt-4o, deployment: chat-prod}",
        "  local-strict: {provider: local-strict, model: llama3.2:3b}",
        "  gpt-reasoning: {provider: gpt, model: gpt-5-mini}",
    ]
    return "\n".join(
        [
            "providers:",
            *providers,
            "models:",
            *models,
            "routes:",
            "  everywhere:",
            "    failover: [gpt, azure-gpt, claude, gemini, bedrock-claude]",
        ]
    )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with ExitStack() as stack:
        drivers = [cls().start(stack) for cls in ALL_DRIVERS]
        old_azure = AzureDriver(api_version="2024-06-01").start(stack)
        strict_local = LocalDriver(refuse_stream_options=True).start(stack)
        config = parse_config(gateway_yaml(drivers, old_azure, strict_local), env={})
        base = stack.enter_context(serve_app(create_app(config)))
        yield World(base, {d.name: d for d in drivers}, old_azure, strict_local)


@pytest.fixture(autouse=True)
def _fresh(world: World) -> None:
    for driver in world.all():
        driver.reset()


@pytest.fixture(params=[cls.name for cls in ALL_DRIVERS])
def driver(request: pytest.FixtureRequest, world: World) -> Driver:
    return world.drivers[request.param]


# ---- one call through either endpoint, read back into one shape --------------------------------


@dataclass
class Result:
    status: int
    headers: httpx.Headers
    text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI-shaped
    finish: str | None = None
    usage: dict[str, Any] | None = None  # input_tokens, output_tokens, total_tokens[, estimated]
    cost: float | None = None  # None where the dialect does not say (an OpenAI stream)
    decisions: list[dict[str, Any]] | None = None
    model: str | None = None
    error: dict[str, Any] | None = None
    raw: str = ""

    def notes(self) -> list[str]:
        return [
            note
            for d in self.decisions or ()
            if d["policy"] == "adapter"
            for note in d["detail"]["notes"]
        ]


def ask(
    world: World,
    endpoint: str,
    name: str,
    messages: list[dict[str, Any]],
    *,
    stream: bool = False,
    **extra: Any,
) -> Result:
    if endpoint == "chat":
        body = {"route": name, "messages": messages, "stream": stream, **extra}
        response = httpx.post(world.base + "/v1/chat", json=body, timeout=20)
        return _native(response, stream)
    body = {"model": name, "messages": messages, "stream": stream, **extra}
    if stream:
        body["stream_options"] = {"include_usage": True}
    response = httpx.post(world.base + "/v1/chat/completions", json=body, timeout=20)
    return _openai(response, stream)


def _native(response: httpx.Response, stream: bool) -> Result:
    result = Result(response.status_code, response.headers, raw=response.text)
    if response.status_code != 200:
        result.error = response.json()["error"]
        return result
    if not stream:
        data = response.json()
        result.text = data["message"]["content"]
        result.tool_calls = data["message"]["tool_calls"]
        end = data
    else:
        events = sse_events(response)
        end = events[-1]
        if end["type"] == "error":
            result.error = end["error"]
            return result
        assert end["type"] == "end"
        deltas = [e["text"] for e in events if e["type"] == "delta"]
        result.text = "".join(deltas) or None
        result.tool_calls = [
            {
                "id": e["id"],
                "type": "function",
                "function": {"name": e["name"], "arguments": e["arguments"]},
            }
            for e in events
            if e["type"] == "tool_call"
        ]
    result.finish = end["finish_reason"]
    result.usage = end["usage"]
    result.cost = end["cost_usd"]
    result.decisions = end["decisions"]
    result.model = end["model"]
    return result


def _openai(response: httpx.Response, stream: bool) -> Result:
    result = Result(response.status_code, response.headers, raw=response.text)
    if response.status_code != 200:
        result.error = response.json()["error"]
        return result
    if not stream:
        data = response.json()
        choice = data["choices"][0]
        result.text = choice["message"]["content"]
        result.tool_calls = choice["message"].get("tool_calls", [])
        result.finish = choice["finish_reason"]
        result.usage = _usage(data["usage"])
        result.cost = data["router"]["cost_usd"]
        result.decisions = data["router"]["decisions"]
        result.model = data["model"]
        return result
    assert response.text.endswith("data: [DONE]\n\n"), response.text
    texts: list[str] = []
    for chunk in sse_events(response):
        if "error" in chunk:
            result.error = chunk["error"]
            return result
        result.model = chunk["model"]
        if chunk.get("usage"):
            result.usage = _usage(chunk["usage"])
        for choice in chunk["choices"]:
            texts.append(choice["delta"].get("content") or "")
            for call in choice["delta"].get("tool_calls") or ():
                result.tool_calls.append({k: v for k, v in call.items() if k != "index"})
            result.finish = choice["finish_reason"] or result.finish
    result.text = "".join(texts) or None
    return result


def _usage(openai_usage: dict[str, Any]) -> dict[str, Any]:
    usage = {
        "input_tokens": openai_usage["prompt_tokens"],
        "output_tokens": openai_usage["completion_tokens"],
        "total_tokens": openai_usage["total_tokens"],
    }
    if openai_usage.get("estimated"):
        usage["estimated"] = True
    return usage


def user(text: str = "What is the weather in Paris?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def answered_model(driver: Driver) -> str:
    return getattr(driver, "answered_model", driver.model)


# ---- a text answer: text, finish, usage, cost, headers ---------------------------------------


@pytest.mark.parametrize("stream", MODES, ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_text_answer_with_usage_and_cost(
    world: World, driver: Driver, endpoint: str, stream: bool
) -> None:
    driver.answer("Rain taps the window.", (1200, 300), stream=stream)
    result = ask(world, endpoint, driver.name, user(), stream=stream)

    assert result.status == 200, result.raw
    assert result.text == "Rain taps the window."
    assert result.finish == "stop"
    assert result.model == answered_model(driver)
    assert result.headers["x-router-provider"] == driver.name
    assert driver.calls == 1
    price_in, price_out = driver.price
    if stream and not driver.stream_usage:
        # The server reported nothing: the gateway counts, and says so.
        assert result.usage is not None and result.usage.get("estimated") is True
        expected_usage = result.usage
    else:
        expected_usage = {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500}
        assert result.usage == expected_usage
    if result.cost is not None:
        expected = (
            expected_usage["input_tokens"] * price_in + expected_usage["output_tokens"] * price_out
        ) / 1e6
        assert result.cost == pytest.approx(expected)
        assert result.cost > 0


def test_bundled_prices_are_the_ones_billed(world: World) -> None:
    # The drivers' prices (which the cost assertions use) are the bundled table's, not made up.
    from providers.prices import list_price

    for driver in world.drivers.values():
        if not isinstance(driver, LocalDriver):
            assert list_price(driver.model) == driver.price, driver.name


# ---- a tool call, and its result sent back ----------------------------------------------------


@pytest.mark.parametrize("stream", MODES, ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tool_call_round_trip(world: World, driver: Driver, endpoint: str, stream: bool) -> None:
    driver.tool_call("get_weather", {"city": "Paris"}, stream=stream)
    first = ask(world, endpoint, driver.name, user(), stream=stream, tools=[WEATHER_TOOL])
    assert first.status == 200, first.raw
    assert first.finish == "tool_calls"
    (call,) = first.tool_calls
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert call["id"]

    conversation = [
        *user(),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"},
    ]
    driver.answer("It is 18C and sunny in Paris.", (40, 9), stream=stream)
    second = ask(world, endpoint, driver.name, conversation, stream=stream, tools=[WEATHER_TOOL])
    assert second.status == 200, second.raw
    assert second.text == "It is 18C and sunny in Paris."
    assert second.finish == "stop"

    # The provider got the call and its result back in its own shape, paired by the same id.
    exchange = driver.tool_exchange()
    assert (exchange.call_id, exchange.name, exchange.arguments) == (
        call["id"],
        "get_weather",
        {"city": "Paris"},
    )
    assert (exchange.result_id, exchange.result) == (call["id"], "18C and sunny")


# ---- errors: each class, as the provider sends it, to its HTTP answer ---------------------------

# kind -> (HTTP status, error type, error code)
EXPECTED_HTTP: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.RATE_LIMITED: (429, "rate_limited", "rate_limited"),
    ErrorKind.TIMEOUT: (504, "upstream_timeout", "timeout"),
    ErrorKind.SERVER_ERROR: (502, "upstream_error", "server_error"),
    ErrorKind.BAD_REQUEST: (400, "invalid_request", "bad_request"),
    ErrorKind.AUTHENTICATION: (502, "upstream_error", "authentication"),
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request", "context_length_exceeded"),
    ErrorKind.CONTENT_FILTERED: (400, "invalid_request", "content_filtered"),
    ErrorKind.NOT_FOUND: (502, "upstream_error", "not_found"),
}

ERROR_CASES = [
    pytest.param(cls.name, kind, id=f"{cls.name}-{kind.value}")
    for cls in ALL_DRIVERS
    for kind in ErrorKind
    if kind in cls.errors
]


@pytest.mark.parametrize("stream", MODES, ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("name", "kind"), ERROR_CASES)
def test_error_class_maps_to_its_http_error(
    world: World, name: str, kind: ErrorKind, endpoint: str, stream: bool
) -> None:
    driver = world.drivers[name]
    driver.fail(kind)
    result = ask(world, endpoint, driver.name, user(), stream=stream)

    status, error_type, code = EXPECTED_HTTP[kind]
    assert (result.status, result.error and result.error["type"]) == (status, error_type)
    assert result.error["code"] == code
    (attempt,) = result.error["details"]["attempts"]
    assert attempt["provider"] == driver.name and attempt["error"] == kind.value
    if kind is ErrorKind.RATE_LIMITED:
        assert result.headers["retry-after"] == str(RETRY_AFTER_S)
    assert driver.key not in result.raw
    assert driver.calls == 1  # a single target: no hidden retries


@pytest.mark.parametrize("stream", MODES, ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_safety_stop_is_a_content_filter_finish(
    world: World, driver: Driver, endpoint: str, stream: bool
) -> None:
    driver.filtered(stream=stream)
    result = ask(world, endpoint, driver.name, user(), stream=stream)
    assert result.status == 200, result.raw
    assert result.finish == "content_filter"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_timeout_s_bounds_a_silent_provider(world: World, driver: Driver, endpoint: str) -> None:
    driver.hang(HASTY_S * 8)
    started = time.monotonic()
    result = ask(world, endpoint, f"{driver.name}-hasty", user())
    assert time.monotonic() - started < HASTY_S * 4
    assert result.status == 504, result.raw
    assert result.error["type"] == "upstream_timeout"


# ---- one failover chain through all five provider types ---------------------------------------


@pytest.mark.parametrize("stream", MODES, ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_failover_runs_across_all_five_provider_types(
    world: World, endpoint: str, stream: bool
) -> None:
    d = world.drivers
    d["gpt"].fail(ErrorKind.SERVER_ERROR)
    d["azure-gpt"].fail(ErrorKind.AUTHENTICATION)
    d["claude"].fail(ErrorKind.TIMEOUT)
    d["gemini"].fail(ErrorKind.NOT_FOUND)
    d["bedrock-claude"].answer("Bedrock answers.", (30, 4), stream=stream)

    result = ask(world, endpoint, "everywhere", user(), stream=stream)

    assert result.status == 200, result.raw
    assert result.text == "Bedrock answers."
    assert result.headers["x-router-provider"] == "bedrock-claude"
    assert result.usage == {"input_tokens": 30, "output_tokens": 4, "total_tokens": 34}
    for name in ("gpt", "azure-gpt", "claude", "gemini", "bedrock-claude"):
        assert d[name].calls == 1, name
    if result.decisions is None:  # an OpenAI stream carries no decisions
        return
    (failover,) = [x for x in result.decisions if x["policy"] == "failover"]
    assert failover["outcome"] == "bedrock-claude"
    attempts = failover["detail"]["attempts"]
    assert [(a["provider"], a.get("error"), a.get("ok")) for a in attempts] == [
        ("gpt", "server_error", None),
        ("azure-gpt", "authentication", None),
        ("claude", "timeout", None),
        ("gemini", "not_found", None),
        ("bedrock-claude", None, True),
    ]
    assert result.cost == pytest.approx((30 * 1.00 + 4 * 5.00) / 1e6)


# ---- parameters a provider cannot take: dropped, noted, never a crash ---------------------------

# What each provider must drop from the request below, beyond tool_choice (there are no tools).
EXTRA_NOTES: dict[str, list[str]] = {
    "gpt": [],
    "azure-gpt": [],
    "local": [],
    "claude": ["temperature dropped", "whitespace-only stop sequences dropped"],
    "gemini": ["user is not sent"],
    "bedrock-claude": ["temperature 1.5 lowered to 1.0", "user is not sent"],
}


@pytest.mark.parametrize(
    ("endpoint", "stream"),
    [("chat", False), ("chat", True), ("completions", False)],
    ids=["chat", "chat-stream", "completions"],
)
def test_unsupported_parameters_are_dropped_with_a_note(
    world: World, driver: Driver, endpoint: str, stream: bool
) -> None:
    driver.answer("Fine.", (10, 2), stream=stream)
    result = ask(
        world,
        endpoint,
        driver.name,
        user(),
        stream=stream,
        tool_choice="auto",
        temperature=1.5,
        stop=["\n\n", "END"],
        user="user-123",
    )
    assert result.status == 200, result.raw
    assert result.text == "Fine."
    notes = result.notes()
    assert any("tool_choice dropped" in n for n in notes), notes
    for expected in EXTRA_NOTES[driver.name]:
        assert any(expected in n for n in notes), (expected, notes)
    (adapter,) = [x for x in result.decisions or () if x["policy"] == "adapter"]
    assert adapter["at"] == driver.name
    sent = json.dumps(driver.last_body)
    assert "tool_choice" not in sent and "toolConfig" not in sent


def test_reasoning_models_get_max_completion_tokens_and_no_sampling(world: World) -> None:
    gpt = world.drivers["gpt"]
    gpt.answer("Thought it through.", (10, 40), stream=False)
    result = ask(world, "chat", "gpt-reasoning", user(), temperature=0.2, top_p=0.5, max_tokens=99)
    assert result.status == 200, result.raw
    sent = gpt.last_body
    assert sent["model"] == "gpt-5-mini" and sent["max_completion_tokens"] == 99
    assert not {"max_tokens", "temperature", "top_p"} & set(sent)
    assert {n.split(" ")[0] for n in result.notes()} == {"temperature", "top_p"}
    assert result.cost == pytest.approx((10 * 0.25 + 40 * 2.00) / 1e6)


# ---- Azure OpenAI: its addressing, auth, deployments and API versions ---------------------------


def test_azure_request_addressing_and_auth(world: World) -> None:
    azure = world.drivers["azure-gpt"]
    azure.answer("Hi.", (5, 1), stream=False)
    assert ask(world, "chat", "azure-gpt", user()).status == 200
    seen = azure.fake.log[-1]
    assert seen.path == "/openai/deployments/chat-prod/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == AzureDriver.key
    assert "authorization" not in seen.headers


@pytest.mark.parametrize("stream", MODES, ids=["whole", "stream"])
def test_azure_deployment_named_by_model_is_priced_by_the_answering_model(
    world: World, stream: bool
) -> None:
    azure = world.drivers["azure-gpt"]
    azure.answer("Small answer.", (1000, 100), stream=stream)
    result = ask(world, "chat", "azure-mini", user(), stream=stream)
    assert result.status == 200, result.raw
    assert azure.fake.log[-1].path == "/openai/deployments/mini-prod/chat/completions"
    assert result.model == "gpt-4o-mini-2024-07-18"
    # No price for the name "mini-prod": the bundled gpt-4o-mini price, from what answered.
    assert result.cost == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)


def test_azure_unknown_deployment_is_not_found(world: World) -> None:
    result = ask(world, "chat", "azure-gone", user())
    assert result.status == 502
    assert result.error["code"] == "not_found"
    assert "deployment" in result.error["message"]


def test_older_api_version_without_stream_options_still_streams(world: World) -> None:
    """API versions before 2024-09-01 refuse `stream_options`: asked once, then not again."""
    old = world.old_azure
    old.answer("Streamed anyway.", (9, 3), stream=True)
    old.answer("And again.", (9, 3), stream=True)
    first = ask(world, "chat", "azure-old-gpt", user(), stream=True)
    second = ask(world, "completions", "azure-old-gpt", user(), stream=True)

    assert (first.status, first.text) == (200, "Streamed anyway."), first.raw
    assert (second.status, second.text) == (200, "And again."), second.raw
    sent = [(s.query["api-version"], "stream_options" in s.body) for s in old.fake.log]
    # The refused request, the same without stream_options, and then only that.
    assert sent == [("2024-06-01", True), ("2024-06-01", False), ("2024-06-01", False)]
    assert first.usage is not None and first.usage.get("estimated") is True
    assert second.usage is not None and second.usage.get("estimated") is True
    assert any("stream_options dropped" in n for n in first.notes())


# ---- an OpenAI-compatible server that leaves things out ---------------------------------------


def test_compatible_server_without_usage_or_optional_fields(world: World) -> None:
    local = world.drivers["local"]
    from tests.fakes.openai_fake import Reply

    local.fake.push(Reply(text="No usage here.", usage=None, finish="stop"))
    result = ask(world, "chat", "local", user())
    assert result.status == 200, result.raw
    assert result.text == "No usage here."
    assert result.model == "llama3.2:3b"
    assert result.usage["estimated"] is True
    assert result.usage["input_tokens"] > 0 and result.usage["output_tokens"] > 0
    assert result.cost == pytest.approx(
        (result.usage["input_tokens"] * 0.05 + result.usage["output_tokens"] * 0.10) / 1e6
    )
    sent = local.last_body
    assert sent["model"] == "llama3.2:3b"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_compatible_server_streams_whole_tool_calls_without_index(
    world: World, endpoint: str
) -> None:
    local = world.drivers["local"]
    from tests.fakes.openai_fake import Stream

    calls = [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    ]
    local.fake.push(Stream(chunks=[], tool_calls=calls, finish="tool_calls"))
    result = ask(world, endpoint, "local", user(), stream=True, tools=[WEATHER_TOOL])
    assert result.status == 200, result.raw
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in result.tool_calls] == [
        ("call_local0", {"city": "Paris"}),
        ("call_local1", {"city": "Oslo"}),
    ]
    assert result.finish == "tool_calls"


def test_compatible_server_refusing_stream_options(world: World) -> None:
    strict = world.strict_local
    strict.answer("Streamed.", (1, 1), stream=True)
    result = ask(world, "chat", "local-strict", user(), stream=True)
    assert (result.status, result.text) == (200, "Streamed."), result.raw
    assert [("stream_options" in s.body) for s in strict.fake.log] == [True, False]
    assert result.usage["estimated"] is True
    assert any("stream_options dropped" in n for n in result.notes())
