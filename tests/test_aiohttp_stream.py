"""`AiohttpSend` with `stream=True`: a streamed response straight from the SDK's aiohttp session
must be the response the HTTP client's own `send(..., stream=True)` gives (status, headers,
body, redirects, cookies, elapsed), its chunks must come as the upstream sends them, errors and
timeouts while reading must be the same httpx errors, and the aiohttp response must be released
however the reading ends. What it does not cover keeps the client's own `send`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
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

from providers import aiohttp_send
from providers.aiohttp_send import AiohttpBody, AiohttpSend, body_of
from providers.openai import OpenAIConfig, OpenAIProvider
from tests.fakes.server import serve_app
from tests.test_aiohttp_send import APP as WHOLE_APP

FIRST, SECOND = b"data: one\n\n", b"data: two\n\n"
# Set by a test once it has the first chunk: until then the upstream holds the second back.
_GO_ON: list[bool] = []


async def _two_parts(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        yield FIRST
        for _ in range(500):  # 5 s at most
            if _GO_ON:
                break
            await asyncio.sleep(0.01)
        yield SECOND

    return StreamingResponse(parts(), media_type="text/event-stream")


async def _stalls(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        yield FIRST
        await asyncio.sleep(2)
        yield SECOND

    return StreamingResponse(parts(), media_type="text/event-stream")


async def _redirect_here(request: Request) -> Response:
    return Response(b"moved", status_code=307, headers={"location": "/json"})


APP = Starlette(
    routes=[
        *WHOLE_APP.routes,
        Route("/two", _two_parts, methods=["POST"]),
        Route("/stalls", _stalls, methods=["POST"]),
        Route("/moved", _redirect_here, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with ExitStack() as stack:
        yield stack.enter_context(serve_app(APP))


def _client(**kwargs: Any) -> httpx2.AsyncClient:
    return openai.DefaultAioHttpClient(**kwargs)


def _request(client: httpx2.AsyncClient, url: str, timeout: float = 5) -> httpx2.Request:
    request = client.build_request("POST", url, content=b'{"a":1}', timeout=timeout)
    request.read()
    return request


async def _direct(
    client: httpx2.AsyncClient, request: httpx2.Request, follow: bool | None = None
) -> httpx2.Response:
    sender = AiohttpSend(client)
    kwargs = {} if follow is None else {"follow_redirects": follow}
    transport = sender.transport_for(request, kwargs)
    assert transport is not None
    return await sender.send(request, transport, follow, stream=True)


async def _shape(response: httpx2.Response) -> dict[str, Any]:
    before = {
        "status": response.status_code,
        "headers": [(k, v) for k, v in response.headers.multi_items() if k != "date"],
        "version": response.http_version,
        "reason": response.reason_phrase,
        "url": str(response.url),
        "history": [(r.status_code, str(r.url), r.content) for r in response.history],
        "next": str(response.next_request.url) if response.next_request else None,
        "closed": response.is_closed,
        "consumed": response.is_stream_consumed,
        "encoding": response.encoding,
    }
    chunks = [chunk async for chunk in response.aiter_bytes()]
    return {
        **before,
        "body": b"".join(chunks),
        "closed after": response.is_closed,
        "downloaded": response.num_bytes_downloaded,
        "elapsed": response.elapsed.total_seconds() >= 0,
    }


@pytest.mark.parametrize(
    "path", ["json", "gzip", "cookie", "redirect", "moved", "chunked", "error", "two"]
)
@pytest.mark.parametrize("follow", [None, False, True])
async def test_the_streamed_response_is_the_clients_own(
    base: str, path: str, follow: bool | None
) -> None:
    _GO_ON.append(True)
    own, direct = _client(), _client()
    try:
        kwargs = {} if follow is None else {"follow_redirects": follow}
        expected = await own.send(_request(own, f"{base}/{path}"), stream=True, **kwargs)
        request = _request(direct, f"{base}/{path}")
        got = await _direct(direct, request, follow)
        assert isinstance(got.stream, AiohttpBody) or got.history
        assert await _shape(got) == await _shape(expected)
        assert got.request is request or got.history
        assert dict(direct.cookies) == dict(own.cookies)
    finally:
        _GO_ON.clear()
        await own.aclose()
        await direct.aclose()


async def test_chunks_come_as_the_upstream_sends_them(base: str) -> None:
    client = _client()
    try:
        response = await _direct(client, _request(client, f"{base}/two"))
        chunks = response.aiter_bytes()
        first = await asyncio.wait_for(anext(chunks), 3)  # the upstream holds the rest back
        assert first == FIRST
        _GO_ON.append(True)
        assert [chunk async for chunk in chunks] == [SECOND]
        assert response.is_closed
    finally:
        _GO_ON.clear()
        await client.aclose()


async def test_a_read_timeout_is_the_clients_own(base: str) -> None:
    own, direct = _client(), _client()
    try:
        outcomes = []
        for client, send in ((own, None), (direct, _direct)):
            request = _request(client, f"{base}/stalls", timeout=0.3)
            if send is None:
                response = await client.send(request, stream=True)
            else:
                response = await send(client, request)
            chunks = response.aiter_bytes()
            assert await anext(chunks) == FIRST
            with pytest.raises(httpx2.HTTPError) as caught:
                await anext(chunks)
            assert response.is_closed
            outcomes.append((type(caught.value), type(caught.value.__cause__)))
            assert caught.value.request is request
        assert outcomes[0] == outcomes[1]
        assert outcomes[1][0] is httpx2.ReadTimeout
    finally:
        await own.aclose()
        await direct.aclose()


@contextlib.asynccontextmanager
async def _cut_short() -> AsyncIterator[str]:
    """An upstream that promises 100 bytes, sends 10 and closes the connection."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(7)  # the body
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100\r\n"
                b"\r\ndata: one\n"
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/cut"
    finally:
        server.close()


async def test_an_error_mid_stream_is_the_clients_own() -> None:
    own, direct = _client(), _client()
    try:
        async with _cut_short() as url:
            outcomes = []
            for client, send in ((own, None), (direct, _direct)):
                request = _request(client, url)
                if send is None:
                    response = await client.send(request, stream=True)
                else:
                    response = await send(client, request)
                with pytest.raises(httpx2.HTTPError) as caught:
                    async for _ in response.aiter_bytes():
                        pass
                assert response.is_closed
                assert caught.value.request is request
                assert isinstance(caught.value.__cause__, aiohttp.ClientError)
                outcomes.append((type(caught.value), type(caught.value.__cause__)))
        assert outcomes[0] == outcomes[1]
    finally:
        await own.aclose()
        await direct.aclose()


@pytest.mark.parametrize("how", ["close", "break", "cancel"])
async def test_the_aiohttp_response_is_released_however_reading_ends(base: str, how: str) -> None:
    client = _client()
    try:
        response = await _direct(client, _request(client, f"{base}/two"))
        body = response.stream
        assert isinstance(body, AiohttpBody)
        answer = body._answer
        assert answer.connection is not None  # held while the body is read
        if how == "close":
            await response.aclose()
        elif how == "break":
            async with contextlib.aclosing(response.aiter_bytes()) as chunks:
                async for _ in chunks:
                    break
        else:

            async def read() -> None:
                async for _ in response.aiter_bytes():
                    pass

            task = asyncio.create_task(read())
            await asyncio.sleep(0.2)  # the first chunk read; the second held back
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert response.is_closed
        assert answer.connection is None and answer.closed
        assert response.elapsed.total_seconds() >= 0
    finally:
        _GO_ON.clear()
        await client.aclose()


async def test_a_connection_refused_is_the_clients_own() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/json"
    own, direct = _client(), _client()
    try:
        with pytest.raises(httpx2.HTTPError) as expected:
            await own.send(_request(own, url), stream=True)
        request = _request(direct, url)
        with pytest.raises(httpx2.HTTPError) as got:
            await _direct(direct, request)
        assert type(got.value) is type(expected.value)
        assert type(got.value.__cause__) is type(expected.value.__cause__)
        assert got.value.request is request
    finally:
        await own.aclose()
        await direct.aclose()


async def test_the_adapter_streams_this_way_and_falls_back(
    base: str, aiohttp_sends: list[bool]
) -> None:
    p = OpenAIProvider("p", OpenAIConfig(type="openai", api_key="k", base_url=f"{base}/v1"))
    sent = aiohttp_sends
    _GO_ON.append(True)
    try:
        pool = p.client._client
        streamed = await p.client._send_request(_request(pool, f"{base}/two"), stream=True)
        assert sent == [True] and isinstance(streamed.stream, AiohttpBody)
        assert b"".join([c async for c in streamed.aiter_bytes()]) == FIRST + SECOND

        async def hook(_: Any) -> None:
            pass

        pool.event_hooks = {"request": [hook], "response": []}  # the client's own send must run
        streamed = await p.client._send_request(_request(pool, f"{base}/two"), stream=True)
        assert sent == [True] and not isinstance(streamed.stream, AiohttpBody)
        assert b"".join([c async for c in streamed.aiter_bytes()]) == FIRST + SECOND
        pool.event_hooks = {"request": [], "response": []}

        own_send = pool.send
        replaced: list[bool] = []

        async def wrapper(request: Any, **kwargs: Any) -> Any:  # as a wrapper of `send` would
            replaced.append(kwargs["stream"])
            return await own_send(request, **kwargs)

        pool.send = wrapper  # type: ignore[method-assign]
        streamed = await p.client._send_request(_request(pool, f"{base}/two"), stream=True)
        assert sent == [True] and replaced == [True]
        assert b"".join([c async for c in streamed.aiter_bytes()]) == FIRST + SECOND
        del pool.send
        streamed = await p.client._send_request(_request(pool, f"{base}/two"), stream=True)
        assert sent == [True, True] and isinstance(streamed.stream, AiohttpBody)
        await streamed.aclose()
    finally:
        _GO_ON.clear()
        await p.aclose()


# ---- `body_of`: what `aiter_bytes` gives, read in one generator ---------------------------------


async def _read(chunks: Any, response: httpx2.Response) -> dict[str, Any]:
    got = [chunk async for chunk in chunks]
    return {
        "chunks": b"".join(got),
        "downloaded": response.num_bytes_downloaded,
        "consumed": response.is_stream_consumed,
        "closed": response.is_closed,
        "elapsed": response.elapsed.total_seconds() >= 0,
    }


@pytest.mark.parametrize("path", ["json", "gzip", "chunked", "two", "error"])
async def test_the_body_is_what_aiter_bytes_gives(base: str, path: str) -> None:
    _GO_ON.append(True)
    client = _client()
    try:
        expected_response = await _direct(client, _request(client, f"{base}/{path}"))
        expected = await _read(expected_response.aiter_bytes(), expected_response)
        response = await _direct(client, _request(client, f"{base}/{path}"))
        chunks = body_of(response)
        assert chunks.__qualname__ == (
            "Response.aiter_bytes" if path == "gzip" else "_read_through"
        )
        assert await _read(chunks, response) == expected
        assert response.stream._answer.connection is None
    finally:
        _GO_ON.clear()
        await client.aclose()


async def test_a_body_read_or_not_from_aiohttp_is_left_to_aiter_bytes(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _GO_ON.append(True)
    own, client = _client(), _client()
    try:
        response = await own.send(_request(own, f"{base}/two"), stream=True)
        assert body_of(response).__qualname__ == "Response.aiter_bytes"  # httpx's own stream
        assert (await _read(body_of(response), response))["chunks"] == FIRST + SECOND
        with pytest.raises(httpx2.StreamConsumed):  # read already: as aiter_bytes says
            await anext(body_of(response))
        monkeypatch.setattr(aiohttp_send, "_RESPONSE_AS_KNOWN", False)
        response = await _direct(client, _request(client, f"{base}/two"))
        chunks = body_of(response)
        assert chunks.__qualname__ == "Response.aiter_bytes"
        assert (await _read(chunks, response))["chunks"] == FIRST + SECOND
    finally:
        _GO_ON.clear()
        await own.aclose()
        await client.aclose()


async def test_the_body_raises_what_aiter_bytes_raises(base: str) -> None:
    client = _client()
    try:
        outcomes = []
        for read in ("aiter_bytes", "body_of"):
            request = _request(client, f"{base}/stalls", timeout=0.3)
            response = await _direct(client, request)
            chunks = response.aiter_bytes() if read == "aiter_bytes" else body_of(response)
            assert await anext(chunks) == FIRST
            with pytest.raises(httpx2.HTTPError) as caught:
                await anext(chunks)
            assert caught.value.request is request and response.is_closed
            outcomes.append((type(caught.value), type(caught.value.__cause__)))
        async with _cut_short() as url:
            for read in ("aiter_bytes", "body_of"):
                request = _request(client, url)
                response = await _direct(client, request)
                chunks = response.aiter_bytes() if read == "aiter_bytes" else body_of(response)
                with pytest.raises(httpx2.HTTPError) as caught:
                    async for _ in chunks:
                        pass
                assert caught.value.request is request and response.is_closed
                outcomes.append((type(caught.value), type(caught.value.__cause__)))
        assert outcomes[0] == outcomes[1] and outcomes[0][0] is httpx2.ReadTimeout
        assert outcomes[2] == outcomes[3]
    finally:
        await client.aclose()


async def test_the_body_closed_early_releases_the_response(base: str) -> None:
    client = _client()
    try:
        response = await _direct(client, _request(client, f"{base}/two"))
        answer = response.stream._answer
        chunks = body_of(response)
        assert await anext(chunks) == FIRST
        await chunks.aclose()
        assert response.is_closed and answer.connection is None and answer.closed
        assert response.num_bytes_downloaded == len(FIRST)
    finally:
        _GO_ON.clear()
        await client.aclose()
