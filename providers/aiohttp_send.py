"""An httpx client's `send`, whole or streamed, straight to its aiohttp session.

The openai SDK sends on an `httpx2.AsyncClient` whose transport is its vendored aiohttp adapter.
For an ordinary call the client's `send` runs an auth flow that does nothing, a redirect loop that
returns at once, a stream wrapper around the adapter's stream wrapper, and then reads the body
through four nested async iterators to join what aiohttp had already read in one piece: about as
much Python as the aiohttp request itself.

`AiohttpSend` does what those layers amount to when they have nothing to do: the same aiohttp
call as the adapter (method, URL, headers, body, timeouts, no redirects, no decompression),
aiohttp errors mapped to httpx's as the adapter maps them, and the same `httpx2.Response`
(status, raw headers, HTTP version, reason, request, elapsed, the client's default encoding),
its body read. A body with a Content-Encoding is decoded by httpx as before; cookies the server
sets go into the client's jar; a redirect is followed (or not) by the client's own loop, from
where this left it. A streamed response (`stream=True`) is the same response with its body
still to read, from the aiohttp response (`AiohttpBody`: one wrapper where the client has two).
A client with event hooks, client-level auth, a URL with credentials, a proxy or another
transport, a `send` of its own or replaced, and any per-call argument but `follow_redirects`,
take the client's own `send`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx2
from httpx2._client import ClientState
from httpx2._exceptions import request_context

try:
    from aiohttp import ClientSession, ClientTimeout
    from openai._vendor.httpx_aiohttp.transport import AiohttpTransport, map_aiohttp_exceptions
except ImportError:  # pragma: no cover - the SDK's aiohttp extra is not installed
    AiohttpTransport = None  # type: ignore[assignment,misc]

_HTTPX_LOG = logging.getLogger("httpx2")  # the client's own logger, as its `send` logs
_HTTP_11 = b"HTTP/1.1"
_HTTPX_SEND = httpx2.AsyncClient.send
# The statuses httpx follows (with a Location): any other answers at once.
_REDIRECTS = frozenset(
    {
        httpx2.codes.MOVED_PERMANENTLY,
        httpx2.codes.FOUND,
        httpx2.codes.SEE_OTHER,
        httpx2.codes.TEMPORARY_REDIRECT,
        httpx2.codes.PERMANENT_REDIRECT,
    }
)


class AiohttpSend:
    """`send(request)` for one `httpx2.AsyncClient`, or None where the client's own must run."""

    __slots__ = ("_client", "_timeouts", "_urls")

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self._client = client
        self._timeouts: dict[tuple[Any, Any, Any], Any] = {}
        self._urls: dict[int, tuple[httpx2.URL, str]] = {}

    def transport_for(self, request: httpx2.Request, kwargs: dict[str, Any]) -> Any:
        """The aiohttp adapter that would send `request`, if nothing else would act on it."""
        client = self._client
        if (
            AiohttpTransport is None
            or "send" in vars(client)  # `send` replaced (a test double, a wrapper): it runs
            or type(client).send is not _HTTPX_SEND
            or (kwargs and kwargs.keys() != {"follow_redirects"})
            or client._auth is not None
            or client._state is ClientState.CLOSED
            or client._event_hooks["request"]
            or client._event_hooks["response"]
            or request.url.userinfo
        ):
            return None
        transport = client._transport_for_url(request.url)
        if type(transport) is not AiohttpTransport or transport.proxy is not None:
            return None
        try:
            request.content  # noqa: B018  (a body not read yet is streamed by the adapter)
        except httpx2.RequestNotRead:
            return None
        return transport

    async def send(
        self,
        request: httpx2.Request,
        transport: Any,
        follow_redirects: bool | None,
        *,
        stream: bool = False,
    ) -> httpx2.Response:
        client = self._client
        client._state = ClientState.OPENED
        if follow_redirects is None:
            follow_redirects = client.follow_redirects
        client._set_timeout(request)
        session = transport.client
        if not isinstance(session, ClientSession):
            session = transport.client = transport.get_client()
        opening = session.request(
            method=request.method,
            url=self._url(request.url),
            headers=request.headers,
            data=request.content or None,
            allow_redirects=False,
            auto_decompress=False,
            compress=False,
            timeout=self._timeout(request.extensions.get("timeout", {})),
            server_hostname=request.extensions.get("sni_hostname"),
            proxy=None,
            proxy_auth=None,
            proxy_headers=None,
        )
        start = time.perf_counter()
        if stream:
            return await self._streamed(request, opening, start, follow_redirects)
        with request_context(request=request), map_aiohttp_exceptions():
            async with opening as answer:
                body = await answer.read()
        response = self._response(request, answer, httpx2.ByteStream(body))
        if "Content-Encoding" in answer.headers:
            await response.aread()  # httpx's decoders, as its own read would use them
        else:
            response._content = body
            response.is_stream_consumed = True
            response.is_closed = True
            response._num_bytes_downloaded = len(body)
        response._elapsed = timedelta(seconds=time.perf_counter() - start)
        if self._answered(request, response, answer, follow_redirects):
            return response
        # Followed as the client's loop follows it, with this response as the history.
        final = await client._send_handling_redirects(
            client._build_redirect_request(request, response),
            follow_redirects=True,
            history=[response],
        )
        try:
            await final.aread()
        except BaseException:
            await final.aclose()
            raise
        return final

    async def _streamed(
        self, request: httpx2.Request, opening: Any, start: float, follow_redirects: bool
    ) -> httpx2.Response:
        """`send(request, stream=True)`: the response with its body still to read, from the
        aiohttp response as the adapter opens it (`AiohttpBody`)."""
        with request_context(request=request), map_aiohttp_exceptions():
            answer = await opening.__aenter__()
        body = AiohttpBody(answer, start, "Content-Encoding" not in answer.headers)
        response = self._response(request, answer, body)
        try:
            if self._answered(request, response, answer, follow_redirects):
                return response
            # Followed as the client's loop follows it: this response read, and the history.
            following = self._client._build_redirect_request(request, response)
            await response.aread()
            return await self._client._send_handling_redirects(
                following, follow_redirects=True, history=[response]
            )
        except BaseException:
            await response.aclose()
            raise

    def _response(self, request: httpx2.Request, answer: Any, stream: Any) -> httpx2.Response:
        """The `httpx2.Response` of an aiohttp response (status, raw headers, version, reason,
        the client's default encoding), its body `stream`."""
        extensions = {"http_version": _HTTP_11}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode()
        response = httpx2.Response(
            status_code=answer.status,
            headers=answer.raw_headers,
            stream=stream,
            request=request,
            extensions=extensions,
        )
        response.default_encoding = self._client._default_encoding
        return response

    def _answered(
        self,
        request: httpx2.Request,
        response: httpx2.Response,
        answer: Any,
        follow_redirects: bool,
    ) -> bool:
        """What the client's `send` does with a response before its redirect loop goes on:
        cookies into the jar, the log line; True unless a redirect is to be followed (one not
        followed gets its `next_request`)."""
        client = self._client
        # Looked up in aiohttp's multidict (case-insensitive, like httpx's headers).
        if "Set-Cookie" in answer.headers:
            client.cookies.extract_cookies(response)
        if _HTTPX_LOG.isEnabledFor(logging.INFO):
            _HTTPX_LOG.info(
                'HTTP Request: %s %s "%s %d %s"',
                request.method,
                request.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
        if response.status_code not in _REDIRECTS or not response.has_redirect_location:
            return True
        if not follow_redirects:
            with contextlib.suppress(httpx2.RemoteProtocolError):
                response.next_request = client._build_redirect_request(request, response)
            return True
        return False

    def _url(self, url: httpx2.URL) -> str:
        # The adapter renders the URL for every call; a provider sends to a handful.
        kept = self._urls.get(id(url))
        if kept is not None and kept[0] is url:
            return kept[1]
        text = str(url)
        if len(self._urls) >= 64:
            self._urls.clear()
        self._urls[id(url)] = (url, text)  # the URL kept alive, so its id is not reused
        return text

    def _timeout(self, timeout: dict[str, Any]) -> Any:
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        made = self._timeouts.get(key)
        if made is None:
            if len(self._timeouts) >= 64:
                self._timeouts.clear()
            made = self._timeouts[key] = ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
        return made


class AiohttpBody(httpx2.AsyncByteStream):
    """A streamed response's body, read from its aiohttp response as the adapter's stream and
    the client's timing wrapper around it read it: chunks of up to 16 KiB as they arrive,
    aiohttp's errors mapped to httpx's, the aiohttp response released on close, and the time
    from sending to closing kept as `elapsed` (which `Response.elapsed` reads)."""

    __slots__ = ("_answer", "_identity", "_start", "elapsed")

    CHUNK_SIZE = 1024 * 16  # the adapter's

    def __init__(self, answer: Any, start: float, identity: bool = False) -> None:
        self._answer = answer
        self._start = start
        self._identity = identity  # sent without a Content-Encoding
        self.elapsed: timedelta | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_exceptions():
            async for chunk in self._answer.content.iter_chunked(self.CHUNK_SIZE):
                yield chunk

    async def aclose(self) -> None:
        self.elapsed = timedelta(seconds=time.perf_counter() - self._start)
        with map_aiohttp_exceptions():
            await self._answer.__aexit__(None, None, None)


def body_of(response: httpx2.Response) -> AsyncIterator[bytes]:
    """`response.aiter_bytes()`; for a body sent as it is (no Content-Encoding) by
    `AiohttpSend`, not yet read, what it amounts to in one generator where httpx has three
    (decoding that does nothing, re-chunking that does nothing, the raw read): the same
    chunks, the same bookkeeping (the stream consumed, the bytes counted, the response closed
    at the end or on close) and the same errors, with the request they were raised for."""
    body = response.stream
    if (
        type(body) is not AiohttpBody
        or not body._identity
        or not _RESPONSE_AS_KNOWN
        or response.is_stream_consumed
        or response.is_closed
    ):
        return response.aiter_bytes()
    return _read_through(response, body._answer.content)


async def _read_through(response: httpx2.Response, content: Any) -> AsyncIterator[bytes]:
    response.is_stream_consumed = True
    response._num_bytes_downloaded = 0
    try:
        with request_context(request=response._request), map_aiohttp_exceptions():
            async for chunk in content.iter_chunked(AiohttpBody.CHUNK_SIZE):
                response._num_bytes_downloaded += len(chunk)
                yield chunk
    finally:
        await response.aclose()


def _response_as_known() -> bool:
    """Whether `httpx2.Response` keeps what `body_of` sets as `aiter_raw` does: its stream
    consumed, its bytes downloaded, its request. Otherwise a body is read by `aiter_bytes`."""
    try:
        request = httpx2.Request("GET", "http://localhost/")
        response = httpx2.Response(200, stream=httpx2.ByteStream(b""), request=request)
        if response.is_stream_consumed or response._request is not request:
            return False
        response._num_bytes_downloaded = 3
        return response.num_bytes_downloaded == 3
    except Exception:  # pragma: no cover - another release, laid out otherwise
        return False


_RESPONSE_AS_KNOWN = _response_as_known()
