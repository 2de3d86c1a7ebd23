"""Request limits, applied by the lifecycle middleware (app/lifecycle.py): a body refused before
it is read into memory, and headers refused before any endpoint sees them."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, RouterError


class HeadersTooLarge(RouterError):
    type, status = "invalid_request", 431


def measure(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, int | None]:
    """One pass over the request's headers: their size, names and values together, and the
    body's declared Content-Length (the last one given; None without a valid one)."""
    size = 0
    declared: int | None = None
    for name, value in headers:
        size += len(name) + len(value)
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
    return size, declared


def headers_too_large(limit: int) -> HeadersTooLarge:
    """431 for headers over the config's `limit` (the HTTP server's own bound comes first: this
    one is the same under any server)."""
    return HeadersTooLarge(
        f"the request headers are larger than {limit} bytes", code="headers_too_large"
    )


async def limit_body(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int, declared: int | None
) -> None:
    """413 for a body over `limit` bytes, by Content-Length or by counting what arrives, before
    `app` sees any of it."""
    if declared is not None:
        # The HTTP server holds the body to its declared length.
        if declared > limit:
            await send_error(send, PayloadTooLarge(f"the body is larger than {limit} bytes"))
            return
        await app(scope, receive, send)
        return
    # No length declared (chunked): read up to the limit before the app sees anything.
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            await app(scope, _replay([message], receive), send)
            return
        body = message.get("body", b"")
        seen += len(body)
        if seen > limit:
            await send_error(send, PayloadTooLarge(f"the body is larger than {limit} bytes"))
            return
        chunks.append(body)
        if not message.get("more_body", False):
            break
    whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
    await app(scope, _replay([whole], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


async def send_error(send: Send, error: RouterError) -> None:
    """Answer with SPEC's JSON error straight from ASGI middleware, before any app has run."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
