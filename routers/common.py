"""What the chat dialects share: running a call through its tree, headers, SSE framing."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from app import quota
from app.chat import Completion, StreamEvent
from app.errors import ErrorKind, ProviderError
from app.routing import Call, Node
from app.steps import WAITING, Resumed, Thrown, first_step
from routers.errors import upstream_failure


class JSONBody(JSONResponse):
    """A JSON response rendered by orjson: the same compact UTF-8 JSON as Starlette's
    `JSONResponse`, at a fraction of the stdlib encoder's cost. What orjson does not take (an
    integer past 64 bits, a key that is not a string) is rendered by the stdlib as before."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            return super().render(content)


class EventStream(Response):
    """A server-sent event stream: `chunks` (bytes) written as they come, those at hand together.

    Starlette's `StreamingResponse` sends each chunk as its own ASGI message (one pass through
    every middleware's `send`, one chunked-encoding frame and one socket write each), and on
    an ASGI server below spec 2.4 (uvicorn) runs it in an anyio task group beside a task that
    waits for the caller to hang up. A provider's chunks mostly come in bursts, several from one
    network read: here every chunk that is ready without waiting joins one message, written
    when the next chunk must be waited for (so nothing is held back while the stream waits),
    and the last goes out with the end of the body. Whether the caller has hung up matters only
    while the stream waits, so the task listening for it starts at the first wait, if any; when
    the caller leaves, the stream is cancelled where it waits (its `finally` blocks run), as
    Starlette's task group would cancel it, and the response ends without error.
    """

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.body_iterator = chunks
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        hang_up = _HangUp(receive)
        try:
            await self._write(send, hang_up)
        except asyncio.CancelledError:
            if not hang_up.cancelled or hang_up.task.uncancel() > 0:
                raise
            return  # the caller left: nothing more to send, and nothing went wrong
        finally:
            hang_up.close()
        if hang_up.cancelled:  # the stream swallowed the cancellation: not ours to keep
            hang_up.task.uncancel()

    async def _write(self, send: Send, hang_up: _HangUp) -> None:
        chunks = self.body_iterator
        held = b""  # chunks at hand, not written yet
        while True:
            try:
                chunk, step, pending = first_step(chunks)
                if chunk is WAITING:
                    if held:
                        message = {"type": "http.response.body", "body": held, "more_body": True}
                        try:
                            await send(message)
                        except BaseException as exc:  # the stream unwinds from where it waits
                            await Thrown(step, exc)
                        held = b""
                    hang_up.watch()
                    chunk = await Resumed(step, pending)
            except StopAsyncIteration:
                break
            held += chunk
        await send({"type": "http.response.body", "body": held, "more_body": False})


class _HangUp:
    """Cancels the streaming task when the caller hangs up, from its first `watch()` until
    `close()`."""

    __slots__ = ("_listener", "_receive", "_streaming", "cancelled", "task")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._listener: asyncio.Task[None] | None = None
        self._streaming = True
        self.cancelled = False
        self.task: Any = None

    def watch(self) -> None:
        if self._listener is None:
            self.task = asyncio.current_task()
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._streaming:
            self.cancelled = True
            self.task.cancel()

    def close(self) -> None:
        self._streaming = False
        if self._listener is not None:
            self._listener.cancel()


def uuid4_hex() -> str:
    """`uuid.uuid4().hex` (random, with the version 4 and RFC 4122 variant bits) for a third of
    its cost: no UUID object is built on the way."""
    return "%032x" % (int.from_bytes(os.urandom(16)) & _UUID4_KEEP | _UUID4_SET)


_UUID4_KEEP = 0xFFFFFFFFFFFF0FFF3FFFFFFFFFFFFFFF  # clears the version and the variant bits
_UUID4_SET = 0x00000000000040008000000000000000  # version 4, variant 10xx


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {dumps(data)}\n\n".encode()


def router_headers(call: Call, route: str) -> dict[str, str]:
    headers = {"x-router-route": route}
    target = call.answer.target if call.answer else call.serving
    if target is not None:
        headers["x-router-target"] = target.name
        headers["x-router-provider"] = target.provider.name
        headers["x-router-model"] = call.answer.model if call.answer else target.model.model
    trace_id = trace_id_of(call)
    if trace_id:
        headers["x-trace-id"] = trace_id
    return headers


def trace_id_of(call: Call) -> str | None:
    return getattr(call, "trace_id", None)


def decisions_of(call: Call) -> list[dict[str, Any]]:
    decisions = [d.as_dict() for d in call.decisions]
    if call.notes:
        at = call.answer.target.path if call.answer else ""
        decisions.append(
            {"policy": "adapter", "at": at, "outcome": "adjusted", "detail": {"notes": call.notes}}
        )
    return decisions


async def complete(node: Node, call: Call) -> Completion:
    lease = await quota.admit(node, call)  # the caller's rate limits and budget: 429/402
    try:
        return await node.complete(call)
    except ProviderError as error:
        raise upstream_failure(error, call) from None
    finally:
        await lease.settle(call)


async def open_stream(node: Node, call: Call) -> tuple[StreamEvent, AsyncIterator[StreamEvent]]:
    """Start the stream and wait for its first event, so that a failure before any output is
    an ordinary HTTP error (with its status) rather than a stream that errors at once."""
    lease = await quota.admit(node, call)  # the caller's rate limits and budget: 429/402
    events = node.stream(call)
    try:
        first = await anext(events)
    except ProviderError as error:
        await events.aclose()  # type: ignore[attr-defined]
        await lease.settle(call)
        raise upstream_failure(error, call) from None
    except StopAsyncIteration:
        await lease.settle(call)
        empty = ProviderError(ErrorKind.SERVER_ERROR, "the stream ended before any event")
        raise upstream_failure(empty, call) from None
    return first, _settled(events, lease, call)


async def _settled(
    events: AsyncIterator[StreamEvent], lease: quota.Lease, call: Call
) -> AsyncIterator[StreamEvent]:
    """The stream, settling the caller's reservation when it ends or is closed."""
    try:
        async for event in events:
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await lease.settle(call)


def answered_model(call: Call, fallback: str) -> str:
    """The model id that answered (as its provider reports it), else the one being streamed."""
    if call.answer is not None:
        return call.answer.model
    if call.serving is not None:
        return call.serving.model.model
    return fallback


def router_summary(call: Call, route: str) -> dict[str, Any]:
    """The gateway's own account of a call, carried as `router` in the compatible dialects."""
    answer = call.answer
    return {
        "route": route,
        "target": answer.target.name if answer else None,
        "provider": answer.target.provider.name if answer else None,
        "cost_usd": round(answer.cost_usd, 10) if answer else 0.0,
        "decisions": decisions_of(call),
    }
