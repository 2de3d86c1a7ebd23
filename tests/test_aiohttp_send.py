"""`AiohttpSend`: a whole response straight from the SDK's aiohttp session must be the response
the HTTP client's own `send` gives (status, headers in order, body, version, reason, redirects,
cookies), and errors must be the same httpx errors; whatever it does not cover goes to `send`."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from providers import openai as adapter
from providers.aiohttp_send import AiohttpSend
from providers.openai import OpenAIConfig, OpenAIProvider
from tests.fakes.server import serve_app

COMPLETION = b'{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"model":"m"}'  # noqa: E501


async def _json(request: Request) -> Response:
    seen = {"body": (await request.body()).decode(), "cookie": request.headers.get("cookie")}
    return Response(
        COMPLETION if request.method == "POST" else repr(seen).encode(),
        media_type="application/json",
        headers={"x-request-id": "r1", "x-seen-cookie": str(seen["cookie"])},
    )


async def _gzip(request: Request) -> Response:
    return Response(
        gzip.compress(COMPLETION),
        media_type="application/json",
        headers={"content-encoding": "gzip"},
    )


async def _cookie(request: Request) -> Response:
    response = Response(COMPLETION, media_type="application/json")
    response.set_cookie("session", "s1")
    return response


async def _redirect(request: Request) -> Response:
    return Response(b"", status_code=307, headers={"location": "/json"})


async def _chunked(request: Request) -> StreamingResponse:
    async def parts() -> Any:
        yield COMPLETION[:20]
        yield COMPLETION[20:]

    return StreamingResponse(parts(), media_type="application/json")


async def _error(request: Request) -> Response:
    return Response(b'{"error":{"message":"no"}}', status_code=429, media_type="application/json")


APP = Starlette(
    routes=[
        Route(f"/{name}", handler, methods=["GET", "POST"])
        for name, handler in (
            ("json", _json),
            ("gzip", _gzip),
            ("cookie", _cookie),
            ("redirect", _redirect),
            ("chunked", _chunked),
            ("error", _error),
        )
    ]
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with ExitStack() as stack:
        yield stack.enter_context(serve_app(APP))


def _client() -> httpx2.AsyncClient:
    client = openai.DefaultAioHttpClient()
    assert AiohttpSend(client).transport_for(client.build_request("GET", "http://x/"), {})
    return client


def _request(client: httpx2.AsyncClient, url: str) -> httpx2.Request:
    request = client.build_request("POST", url, content=b'{"a":1}', timeout=5)
    request.read()
    return request


def _shape(response: httpx2.Response) -> dict[str, Any]:
    return {
        "status": response.status_code,
        "headers": [(k, v) for k, v in response.headers.multi_items() if k != "date"],
        "content": response.content,
        "version": response.http_version,
        "reason": response.reason_phrase,
        "url": str(response.url),
        "history": [(r.status_code, str(r.url)) for r in response.history],
        "next": str(response.next_request.url) if response.next_request else None,
        "closed": response.is_closed,
        "encoding": response.encoding,
        "json": response.json() if response.status_code == 200 else None,
    }


@pytest.mark.parametrize("path", ["json", "gzip", "cookie", "redirect", "chunked", "error"])
@pytest.mark.parametrize("follow", [None, False])
async def test_the_response_is_the_clients_own(base: str, path: str, follow: bool | None) -> None:
    own, direct = _client(), _client()
    try:
        kwargs = {} if follow is None else {"follow_redirects": follow}
        expected = await own.send(_request(own, f"{base}/{path}"), **kwargs)
        sender = AiohttpSend(direct)
        request = _request(direct, f"{base}/{path}")
        transport = sender.transport_for(request, kwargs)
        assert transport is not None
        got = await sender.send(request, transport, follow)
        assert _shape(got) == _shape(expected)
        assert got.request is request or got.history  # the request it answered
        assert got.elapsed.total_seconds() >= 0
        assert dict(direct.cookies) == dict(own.cookies)
        if path == "cookie":  # kept by the client's jar, and sent on the next request
            assert dict(direct.cookies) == {"session": "s1"}
            again = _request(direct, f"{base}/json")
            sent = await sender.send(again, sender.transport_for(again, {}), None)
            assert sent.headers["x-seen-cookie"] == "session=s1"
    finally:
        await own.aclose()
        await direct.aclose()


async def test_connection_errors_are_the_same_httpx_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/json"
    own, direct = _client(), _client()
    try:
        with pytest.raises(httpx2.HTTPError) as expected:
            await own.send(_request(own, url))
        sender = AiohttpSend(direct)
        request = _request(direct, url)
        with pytest.raises(httpx2.HTTPError) as got:
            await sender.send(request, sender.transport_for(request, {}), None)
        assert type(got.value) is type(expected.value)
        assert got.value.request is request
        assert isinstance(got.value.__cause__, aiohttp.ClientError)
        assert type(got.value.__cause__) is type(expected.value.__cause__)
    finally:
        await own.aclose()
        await direct.aclose()


async def test_what_it_does_not_cover_goes_to_the_clients_send() -> None:
    client = _client()
    sender = AiohttpSend(client)
    plain = _request(client, "http://127.0.0.1:9/json")
    assert sender.transport_for(plain, {}) is not None
    assert sender.transport_for(plain, {"follow_redirects": True}) is not None
    assert sender.transport_for(plain, {"auth": None}) is None  # a per-call auth
    assert sender.transport_for(_request(client, "http://u:p@127.0.0.1:9/json"), {}) is None
    unread = client.build_request("POST", "http://127.0.0.1:9/json", content=iter([b"x"]))
    assert sender.transport_for(unread, {}) is None

    async def hook(_: Any) -> None:
        pass

    for kind in ("request", "response"):
        hooked = _client()
        hooked.event_hooks = {kind: [hook]}
        assert AiohttpSend(hooked).transport_for(plain, {}) is None
        await hooked.aclose()
    authed = _client()
    authed.auth = ("user", "pass")
    assert AiohttpSend(authed).transport_for(plain, {}) is None
    await authed.aclose()
    other = httpx2.AsyncClient()  # httpx's own transport
    assert AiohttpSend(other).transport_for(plain, {}) is None
    await other.aclose()
    await client.aclose()
    assert sender.transport_for(plain, {}) is None  # closed: `send` says so


async def test_the_adapter_sends_whole_responses_this_way(
    base: str, aiohttp_sends: list[bool]
) -> None:
    p = OpenAIProvider("p", OpenAIConfig(type="openai", api_key="k", base_url=f"{base}/v1"))
    sent = aiohttp_sends
    try:
        request = _request(p.client._client, f"{base}/json")
        response = await p.client._send_request(request, stream=False)
        assert response.content == COMPLETION and sent == [False]
        streamed = await p.client._send_request(
            _request(p.client._client, f"{base}/json"), stream=True
        )
        assert sent == [False, True]  # a stream too (tests/test_aiohttp_stream.py)
        await streamed.aclose()
    finally:
        await p.aclose()
    assert adapter.AiohttpSend is AiohttpSend


# ---- the adapter's plain call: what the client's `request` would answer or raise ---------------


async def _slow(request: Request) -> Response:
    import asyncio

    await asyncio.sleep(1)
    return Response(COMPLETION, media_type="application/json")


for _status, _body, _type in (
    (400, b'{"error":{"message":"bad","type":"invalid_request_error"}}', "application/json"),
    (401, b'{"error":{"message":"key"}}', "application/json"),
    (404, b"not here", "text/plain"),
    (429, b'{"error":{"message":"slow down"}}', "application/json"),
    (500, b"", "text/plain"),
    (302, b"", "text/plain"),
    (307, b"", "text/plain"),
):

    def _make(status: int = _status, body: bytes = _body, kind: str = _type) -> Any:
        async def answer(request: Request) -> Response:
            headers = {"location": "/json"} if status == 307 else {}  # 302: nowhere to go
            return Response(body, status_code=status, media_type=kind, headers=headers)

        return answer

    APP.router.routes.append(Route(f"/v1/s{_status}/chat/completions", _make(), methods=["POST"]))
APP.router.routes.append(Route("/v1/ok/chat/completions", _json, methods=["POST"]))
APP.router.routes.append(Route("/v1/slow/chat/completions", _slow, methods=["POST"]))


def _provider(url: str) -> OpenAIProvider:
    return OpenAIProvider("p", OpenAIConfig(type="openai", api_key="k", base_url=url))


async def _outcome(p: OpenAIProvider, plain: bool, within_s: float = 5) -> Any:
    options = p._chat_options.model_copy(
        update={"json_data": {"model": "m", "messages": []}, "timeout": within_s}
    )
    try:
        if plain:
            assert p._plain_call.usable()
            return ("ok", await p._plain_call(options))
        raw = await p.client.request(openai.types.chat.ChatCompletion, options)
        return ("ok", raw.http_response.content)
    except openai.APIStatusError as exc:
        return (type(exc), exc.status_code, exc.body, str(exc), exc.response.content)
    except openai.APIError as exc:
        cause = exc.__cause__
        return (type(exc), str(exc), type(cause), type(cause.__cause__) if cause else None)


@pytest.mark.parametrize(
    "path", ["ok", "s400", "s401", "s404", "s429", "s500", "s302", "s307", "slow"]
)
async def test_the_plain_call_answers_and_raises_as_request_does(base: str, path: str) -> None:
    p = _provider(f"{base}/v1/{path}")
    try:
        await _outcome(p, plain=False)  # the first call finds the platform out
        timeout = 0.2 if path == "slow" else 5
        expected = await _outcome(p, plain=False, within_s=timeout)
        got = await _outcome(p, plain=True, within_s=timeout)
        assert got == expected
        if path == "ok":
            assert got == ("ok", COMPLETION)
    finally:
        await p.aclose()


async def test_the_plain_call_on_a_refused_connection_raises_as_request_does() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = _provider(f"http://127.0.0.1:{port}/v1")
    try:
        await _outcome(p, plain=False)
        expected = await _outcome(p, plain=False)
        assert expected[0] in (openai.APIConnectionError, openai.APITimeoutError)
        assert await _outcome(p, plain=True) == expected
    finally:
        await p.aclose()


async def test_the_plain_call_steps_aside_where_request_must_run(base: str, monkeypatch) -> None:
    import logging

    p = _provider(f"{base}/v1/ok")
    try:
        assert not p._plain_call.usable()  # the platform is not known before the first call
        await p.complete(_model(), _ask())
        assert p._plain_call.usable()
        used: list[bool] = []
        real = adapter._PlainCall.__call__

        async def spy(self: Any, options: Any) -> bytes:
            used.append(True)
            return await real(self, options)

        monkeypatch.setattr(adapter._PlainCall, "__call__", spy)
        await p.complete(_model(), _ask())
        assert used == [True]

        sdk_request = openai.AsyncOpenAI.request

        async def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:  # as an instrumentor
            return await sdk_request(self, *args, **kwargs)

        monkeypatch.setattr(openai.AsyncOpenAI, "request", wrapped)
        assert not p._plain_call.usable()
        await p.complete(_model(), _ask())
        assert used == [True]  # the wrapped `request` ran
        monkeypatch.undo()
        assert p._plain_call.usable()

        monkeypatch.setattr(p.client, "_provider_runtime", object())
        assert not p._plain_call.usable()
        monkeypatch.undo()
        logging.getLogger("openai._base_client").setLevel(logging.DEBUG)
        try:
            assert not p._plain_call.usable()  # the SDK's debug log keeps its lines
        finally:
            logging.getLogger("openai._base_client").setLevel(logging.NOTSET)
        assert p._plain_call.usable()
    finally:
        await p.aclose()


def _model() -> Any:
    from app.config import ModelConfig

    return ModelConfig(provider="p", model="m")


def _ask() -> Any:
    from app.chat import ChatRequest

    return ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})


async def test_a_request_patched_on_the_base_client_still_runs(base: str, monkeypatch) -> None:
    from openai._base_client import AsyncAPIClient

    p = _provider(f"{base}/v1/ok")
    try:
        await p.complete(_model(), _ask())
        assert p._plain_call.usable()
        seen: list[bool] = []
        sdk_request = AsyncAPIClient.request

        async def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(True)
            return await sdk_request(self, *args, **kwargs)

        monkeypatch.setattr(AsyncAPIClient, "request", wrapped)
        assert not p._plain_call.usable()
        await p.complete(_model(), _ask())
        assert seen == [True]
    finally:
        await p.aclose()
