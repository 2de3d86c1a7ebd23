"""The openai adapter's requests: built once per kind of call, then reused around a new body.

Every request the shortcut builds must be the one the SDK would have built (method, URL,
headers in order, body, extensions); whatever it does not recognise goes to the SDK's own method.
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest
from openai._models import FinalRequestOptions

from providers import openai as adapter
from providers.azure_openai import AzureOpenAIConfig, AzureOpenAIProvider
from providers.openai import OpenAIConfig, OpenAIProvider

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Write a haiku"}]}
OTHER = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Pluie d'été, ça ruisselle ☔"}],
    "temperature": 0.25,
    "max_tokens": 12,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def provider(**config: Any) -> OpenAIProvider:
    return OpenAIProvider(
        "p",
        OpenAIConfig(type="openai", api_key="sk-test", base_url="http://127.0.0.1:9/v1", **config),
    )


def counted(provider: OpenAIProvider) -> list[int]:
    """Counts the SDK's own builds behind the provider's shortcut."""
    prebuilt = provider.client._build_request
    assert isinstance(prebuilt, adapter._PrebuiltRequests)
    sdk = prebuilt._build
    calls = [0]

    def build(options: FinalRequestOptions, *, retries_taken: int = 0) -> Any:
        calls[0] += 1
        return sdk(options, retries_taken=retries_taken)

    prebuilt._build = build
    return calls


def sdk_request(provider: OpenAIProvider, options: FinalRequestOptions) -> httpx2.Request:
    """What the SDK itself builds for these options (its method, unwrapped)."""
    return type(provider.client)._build_request(provider.client, options.model_copy())


def same(built: httpx2.Request, expected: httpx2.Request) -> None:
    assert built.method == expected.method
    assert built.url == expected.url
    assert built.headers.multi_items() == expected.headers.multi_items()
    assert built.extensions == expected.extensions
    assert json.loads(built.content) == json.loads(expected.content)
    assert built.headers["content-length"] == str(len(built.content))
    assert isinstance(built.stream, httpx2.ByteStream) and built.read() == built.content


def chat_options(p: OpenAIProvider, body: dict, timeout: float = 30.0) -> FinalRequestOptions:
    return p._chat_options.model_copy(update={"json_data": body, "timeout": timeout})


@pytest.mark.parametrize("template", ["_chat_options", "_stream_options"])
def test_reused_requests_are_the_sdks_own(template: str) -> None:
    p = provider()
    calls = counted(p)
    make = getattr(p, template)
    first = make.model_copy(update={"json_data": BODY, "timeout": 30.0})
    same(p.client._build_request(first.model_copy()), sdk_request(p, first))
    assert calls[0] == 2  # learnt: built twice by the SDK, to see it builds the same each time
    for body in (OTHER, BODY, {**BODY, "user": "ü-1"}):
        options = make.model_copy(update={"json_data": body, "timeout": 30.0})
        same(p.client._build_request(options.model_copy()), sdk_request(p, options))
    assert calls[0] == 2  # every later one built here, around its own body


def test_each_timeout_and_client_state_is_its_own_kind() -> None:
    p = provider(organization="org-1")
    calls = counted(p)
    for timeout in (30.0, 5.0, 30.0):
        options = chat_options(p, BODY, timeout)
        built = p.client._build_request(options.model_copy())
        same(built, sdk_request(p, options))
        assert built.headers["x-stainless-read-timeout"] == str(timeout)
        assert built.extensions["timeout"]["read"] == timeout
    assert calls[0] == 4  # two kinds learnt, the third call reused the first

    p.client.api_key = "sk-rotated"
    options = chat_options(p, BODY)
    built = p.client._build_request(options.model_copy())
    same(built, sdk_request(p, options))
    assert built.headers["authorization"] == "Bearer sk-rotated"
    assert built.headers["openai-organization"] == "org-1"

    p.client.base_url = "http://127.0.0.1:10/v2"
    built = p.client._build_request(options.model_copy())
    assert str(built.url) == "http://127.0.0.1:10/v2/chat/completions"
    assert built.headers["host"] == "127.0.0.1:10"
    same(built, sdk_request(p, options))


def test_reused_requests_do_not_share_mutable_parts() -> None:
    p = provider()
    options = chat_options(p, BODY)
    one = p.client._build_request(options.model_copy())
    two = p.client._build_request(options.model_copy())
    for built in (one, two):  # the request learnt from, and one built from what was learnt
        built.headers["authorization"] = "Bearer other"  # as the SDK's auth retry may do
        built.extensions["timeout"]["read"] = 1.0
    three = p.client._build_request(options.model_copy())
    assert three.headers["authorization"] == "Bearer sk-test"
    assert three.extensions["timeout"]["read"] == 30.0
    same(three, sdk_request(p, options))


def test_cookies_the_http_client_holds_are_sent_as_the_sdk_sends_them() -> None:
    p = provider()
    options = chat_options(p, BODY)
    p.client._build_request(options.model_copy())  # learnt without cookies
    p.client._client.cookies.set("__cf_bm", "abc", domain="127.0.0.1")
    expected = sdk_request(p, options)
    assert expected.headers["cookie"] == "__cf_bm=abc"
    same(p.client._build_request(options.model_copy()), expected)


def test_a_header_made_per_call_leaves_that_kind_to_the_sdk() -> None:
    p = provider()
    prebuilt = p.client._build_request
    sdk = prebuilt._build

    def stamped(options: FinalRequestOptions, *, retries_taken: int = 0) -> Any:
        request = sdk(options, retries_taken=retries_taken)
        length = request.headers.pop("content-length")  # the nonce among the SDK's headers
        request.headers["x-request-nonce"] = uuid.uuid4().hex
        request.headers["content-length"] = length
        return request

    prebuilt._build = stamped
    options = chat_options(p, BODY)
    nonces = {
        p.client._build_request(options.model_copy()).headers["x-request-nonce"] for _ in "abc"
    }
    assert len(nonces) == 3
    assert list(prebuilt._kinds.values()) == [None]


@pytest.mark.parametrize(
    "update",
    [
        {"params": {"api-version": "1"}},
        {"json_data": [1, 2]},
        {"json_data": None, "content": b"{}"},
        {"extra_json": {"x": 1}},
        {"json_data": {**BODY, "n": 2**70}},  # orjson cannot write it: the SDK's dumps can
    ],
    ids=["query", "list-body", "content", "extra-json", "big-int"],
)
def test_other_calls_go_through_the_sdks_method(update: dict) -> None:
    p = provider()
    calls = counted(p)
    p.client._build_request(chat_options(p, BODY).model_copy())  # a kind learnt: still not used
    calls[0] = 0
    options = chat_options(p, BODY).model_copy(update=update)
    built = p.client._build_request(options.model_copy())
    expected = sdk_request(p, options)
    assert built.url == expected.url
    assert built.headers.multi_items() == expected.headers.multi_items()
    assert built.content == expected.content
    assert calls[0] == 1


def test_an_idempotency_header_is_left_to_the_sdk() -> None:
    p = provider()
    calls = counted(p)
    p.client._idempotency_header = "Idempotency-Key"
    keys = set()
    for index in range(3):
        options = chat_options(p, BODY).model_copy(update={"idempotency_key": f"key-{index}"})
        keys.add(p.client._build_request(options.model_copy()).headers["idempotency-key"])
    assert keys == {"key-0", "key-1", "key-2"} and calls[0] == 3


def test_a_renamed_client_attribute_falls_back_to_the_sdk() -> None:
    class Client:  # an SDK whose client lost an attribute the key reads
        api_key = "k"

        def __init__(self) -> None:
            self.built: list[Any] = []

        def _build_request(self, options: Any, *, retries_taken: int = 0) -> str:
            self.built.append(options)
            return "the SDK's request"

    client = Client()
    prebuilt = adapter._PrebuiltRequests(client)  # type: ignore[arg-type]
    p = provider()
    options = chat_options(p, BODY)
    assert prebuilt(options) == "the SDK's request"
    assert prebuilt(options) == "the SDK's request"
    assert client.built == [options, options] and prebuilt._kinds == {}


def test_only_clients_building_requests_as_the_base_client_get_it(monkeypatch) -> None:
    assert adapter._PrebuiltRequests.fits(openai.AsyncOpenAI(api_key="k"))
    azure = AzureOpenAIProvider(
        "az",
        AzureOpenAIConfig(
            type="azure_openai", endpoint="https://x.openai.azure.com", api_key="k", api_version="1"
        ),
    )
    # Azure's client reads the deployment from the body: it keeps its own method.
    assert not isinstance(azure.client._build_request, adapter._PrebuiltRequests)

    class Custom(openai.AsyncOpenAI):
        def _build_request(self, options: Any, *, retries_taken: int = 0) -> Any:
            return super()._build_request(options, retries_taken=retries_taken)

    assert not adapter._PrebuiltRequests.fits(Custom(api_key="k"))
    monkeypatch.setattr(adapter, "BaseClient", type("Renamed", (), {}))
    assert not adapter._PrebuiltRequests.fits(openai.AsyncOpenAI(api_key="k"))
    assert not isinstance(provider().client._build_request, adapter._PrebuiltRequests)


def test_kinds_kept_are_bounded() -> None:
    p = provider()
    for index in range(adapter._PrebuiltRequests.LIMIT + 5):
        p.client._build_request(chat_options(p, BODY, timeout=1.0 + index).model_copy())
    assert len(p.client._build_request._kinds) <= adapter._PrebuiltRequests.LIMIT


# ---- sending: straight to the HTTP client when the SDK's wrappers have nothing to do ----------


RESPONSE = SimpleNamespace(status_code=200)


def sent_through(p: OpenAIProvider) -> list[Any]:
    seen: list[Any] = []

    async def send(request: Any, *, stream: bool, **kwargs: Any) -> Any:
        seen.append((request, stream, kwargs))
        return RESPONSE

    p.client._client.send = send  # type: ignore[method-assign]
    return seen


async def test_requests_go_straight_to_the_http_client() -> None:
    p = provider()
    seen = sent_through(p)
    response = await p.client._send_request("request", stream=True, follow_redirects=False)
    assert response is RESPONSE
    assert seen == [("request", True, {"follow_redirects": False})]


async def test_a_provider_runtime_keeps_the_sdks_send_path() -> None:
    p = provider()
    sent_through(p)
    p.client._provider_runtime = SimpleNamespace(  # as a provider (Bedrock, …) sets it
        normalize_async_response=None, normalize_response=lambda response: ("normalised", response)
    )
    assert await p.client._send_request("request", stream=False) == ("normalised", RESPONSE)


async def test_renamed_send_attributes_keep_the_sdks_send_path() -> None:
    class Client:  # an SDK whose client lost the attributes looked at
        async def _send_request(self, request: Any, *, stream: bool, **kwargs: Any) -> str:
            return "the SDK's send"

    send = adapter._direct_send(Client())  # type: ignore[arg-type]
    assert await send("request", stream=False) == "the SDK's send"


def test_no_idempotency_key_is_made_per_call_where_none_is_sent() -> None:
    p = provider()
    assert p.client._idempotency_header is None
    for options in (p._chat_options, p._stream_options):
        assert options.idempotency_key == ""
        built = p.client._build_request(options.model_copy(update={"json_data": BODY}))
        assert not any(name.lower().startswith("idempotency") for name in built.headers)

    class Keyed(OpenAIProvider):
        def _build_client(self, config: Any) -> openai.AsyncOpenAI:
            client = super()._build_client(config)
            client._idempotency_header = "Idempotency-Key"
            return client

    keyed = Keyed("k", OpenAIConfig(type="openai", api_key="k"))
    assert keyed._chat_options.idempotency_key is None  # the SDK makes one per call, as before


# ---- traced: the instrumentor's LLM span is whole on reused requests too ------------------------


def test_reused_requests_keep_the_llm_span_whole(stack, traced) -> None:
    import httpx

    from tests.fakes.openai_fake import OpenAIFake
    from tests.fakes.openai_fake import Reply as OpenAIReply
    from tests.fakes.openai_fake import Stream as OpenAIStream
    from tests.fakes.server import serve_app
    from tests.tracing_helpers import children, one

    fake = OpenAIFake()
    fake.push(*(OpenAIReply(usage=(11, 7)) for _ in range(3)))
    fake.push(*(OpenAIStream(usage=(11, 7)) for _ in range(3)))
    url = stack.enter_context(serve_app(fake.app))
    gw = traced(
        f"""
providers:
  up: {{type: openai, base_url: "{url}/v1", api_key: sk-test, instrumentation: openinference}}
models:
  m: {{provider: up, model: gpt-4o}}
routes:
  only: m
"""
    )
    up = gw.app.state.gateway.providers["up"]
    built = counted(up)
    for stream in (False, True):
        for turn in range(3):
            ask = {
                "route": "only",
                "stream": stream,
                "temperature": 0.5,
                "messages": [{"role": "user", "content": f"Hi there, turn {turn}"}],
            }
            response = httpx.post(gw.url + "/v1/chat", json=ask, timeout=10)
            assert response.status_code == 200, response.text
            spans = gw.spans(response.headers["x-trace-id"], 4)
            (llm,) = children(spans, one(spans, "attempt m"))
            attributes = llm.attributes
            assert attributes["llm.model_name"] == "gpt-4o"
            assert attributes["llm.token_count.prompt"] == 11
            assert attributes["llm.token_count.completion"] == 7
            assert json.loads(attributes["llm.invocation_parameters"])["temperature"] == 0.5
            assert attributes["llm.input_messages.0.message.content"] == f"Hi there, turn {turn}"
            assert fake.log[-1].body["messages"][0]["content"].endswith(str(turn))
    assert built[0] == 4  # two kinds learnt (whole, stream); the other four calls reused them


# ---- the client's per-call hooks: skipped only while they have nothing to do --------------------


async def test_idle_prepare_hooks_are_skipped_and_busy_ones_run() -> None:
    p = provider()
    client = p.client
    options = p._chat_options.model_copy(update={"json_data": BODY})
    assert await client._prepare_options(options) is options
    sdk_hook = openai.AsyncOpenAI._prepare_options
    assert client._prepare_options is not sdk_hook  # an instance attribute: no import per call

    seen: list[str] = []

    def transform(given: FinalRequestOptions) -> FinalRequestOptions:
        seen.append("options")
        return given

    def prepare(request: httpx2.Request) -> None:
        seen.append("request")

    client._provider_runtime = SimpleNamespace(  # as a provider (Bedrock, …) sets it
        transform_async_request=None,
        transform_request=transform,
        prepare_async_request=None,
        prepare_request=prepare,
    )
    await client._prepare_options(options)
    await client._prepare_request(client._build_request(options))
    assert seen == ["options", "request"]


async def test_a_key_given_as_a_function_is_still_refreshed() -> None:
    async def key() -> str:
        return "sk-fresh"

    client = openai.AsyncOpenAI(api_key=key, base_url="http://127.0.0.1:9/v1", max_retries=0)
    adapter._skip_idle_hooks(client)
    options = FinalRequestOptions.construct(
        method="post", url="/chat/completions", json_data=BODY, security={"bearer_auth": True}
    )
    assert client.api_key != "sk-fresh"
    await client._prepare_options(options)
    assert client.api_key == "sk-fresh"  # the SDK's hook asked the function
    await client.close()


def test_clients_with_hooks_of_their_own_keep_them() -> None:
    azure = AzureOpenAIProvider(
        "az",
        AzureOpenAIConfig(
            type="azure_openai",
            api_key="k",
            endpoint="https://example.openai.azure.com",
            api_version="2024-06-01",
        ),
    )
    assert "_prepare_options" not in vars(azure.client)
