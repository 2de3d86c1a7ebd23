"""A local stand-in for the OpenAI Chat Completions API, scriptable per test.

It speaks the real wire format (JSON bodies, SSE chunks ending in `data: [DONE]`, OpenAI error
bodies, Retry-After headers) so the official SDK parses it. Each incoming request takes the next
scripted behaviour (or the default answer) and is logged with its timing, so that a test can
check the gateway's conduct from the upstream's side: how many attempts, how far apart, and when
the gateway gave up on a silent or stalled answer.

Every upstream fault the failover policy handles can be scripted: error statuses with or without
Retry-After (`Fail`, with presets for the context-length and content-filter 400s), a connection
reset before any header (`Reset`), silence (`Hang`), and for streams a slow first token, a stall
between chunks, a malformed chunk, a reset mid-body, and a body that ends, or stays open, without
its finish reason or `[DONE]` terminator (`Stream`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


@dataclass
class Reply:
    text: str | None = "Hello from the fake."
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": "{...}"}]
    finish: str = "stop"
    usage: tuple[int, int] | None = (11, 7)
    model: str | None = None  # defaults to the requested model
    delay: float = 0.0


@dataclass
class Fail:
    status: int
    message: str = "upstream failure"
    code: str | None = None
    type: str = "server_error"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def context_length(cls, limit: int = 8192) -> Fail:
        """OpenAI's 400 for a prompt longer than the model's context window."""
        return cls(
            400,
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {limit + 1000} tokens. Please reduce the length of the messages.",
            code="context_length_exceeded",
            type="invalid_request_error",
        )

    @classmethod
    def content_filter(cls) -> Fail:
        """OpenAI's 400 for a prompt its content policy refused."""
        return cls(
            400,
            "The response was filtered due to the prompt triggering the content management policy.",
            code="content_filter",
            type="invalid_request_error",
        )

    @classmethod
    def prefill_rejected(cls) -> Fail:
        """The 400 of a server that refuses a conversation ending in an assistant message."""
        return cls(
            400,
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message.",
            type="invalid_request_error",
        )


@dataclass
class Reset:
    """Accept the request, then reset the TCP connection before sending any header."""

    delay: float = 0.0


@dataclass
class Stream:
    chunks: list[str] = field(default_factory=lambda: ["Hel", "lo ", "there."])
    tool_calls: list[dict[str, Any]] | None = None
    finish: str | None = "stop"  # None: no finish_reason ever sent
    usage: tuple[int, int] | None = (11, 3)  # None: no usage chunk (as many servers do)
    model: str | None = None
    first_delay: float = 0.0
    between: float = 0.0
    cut_after: int | None = None  # close the body after this many content chunks
    done: bool = True  # send the `data: [DONE]` terminator
    done_after: float = 0.0  # wait this long after the usage chunk before `[DONE]`
    malformed_after: int | None = None  # insert a garbage line after this many chunks
    stall_after: int | None = None  # pause `stall` seconds after this many content chunks
    stall: float = 0.0
    reset_after: int | None = None  # reset the connection after this many content chunks
    hold: float = 0.0  # keep the body open this long after the last chunk sent
    # Continue a prefill: a request ending in an assistant message whose text begins the answer
    # gets only the rest of it (the chunk holding the boundary sliced), as a server that
    # supports assistant prefill does. False: the whole answer, as one that ignores it.
    continues: bool = False

    def after(self, prefix: str) -> Stream:
        """This stream, answering with what follows `prefix` in its text."""
        text = "".join(self.chunks)
        if not text.startswith(prefix):
            raise AssertionError(f"the prefill {prefix!r} does not begin {text!r}")
        rest: list[str] = []
        seen = 0
        for chunk in self.chunks:
            start = max(0, len(prefix) - seen)
            if start < len(chunk):
                rest.append(chunk[start:])
            seen += len(chunk)
        return replace(self, chunks=rest, continues=False)


@dataclass
class Hang:
    """Accept the request and say nothing, until the client hangs up or `seconds` pass."""

    seconds: float = 30.0


Behaviour = Reply | Fail | Stream | Hang | Reset


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    ended: float | None = None  # the answer was complete, or the connection ended
    status: int | None = None
    query: dict[str, str] = field(default_factory=dict)
    outcome: str = "open"  # reply | fail | stream | reset | hung_up (the client left) | timeout
    first_chunk: float | None = None  # a stream's first content chunk was sent
    # The request itself, for the behaviours that watch or cut its connection.
    request: Request | None = field(default=None, repr=False, compare=False)

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


class OpenAIFake:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.script: deque[Behaviour] = deque()
        self.default: Behaviour = Reply()
        self.log: list[Seen] = []
        self.app = _WithTransport(
            Starlette(
                routes=[
                    Route("/v1/chat/completions", self._chat, methods=["POST"]),
                    Route("/v1/models", self._models, methods=["GET"]),
                ]
            )
        )

    def push(self, *behaviours: Behaviour) -> OpenAIFake:
        self.script.extend(behaviours)
        return self

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [seen.body for seen in self.log]

    def settled(self, timeout: float = 2.0) -> list[Seen]:
        """The log once every request has ended (a hang-up is noticed a moment after it)."""
        until = time.monotonic() + timeout
        while any(seen.ended is None for seen in self.log) and time.monotonic() < until:
            time.sleep(0.01)
        return self.log

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    def _see(self, request: Request, body: dict[str, Any]) -> Seen:
        seen = Seen(
            request.url.path,
            body,
            dict(request.headers),
            time.monotonic(),
            query=dict(request.query_params),
            request=request,
        )
        self.log.append(seen)
        return seen

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        seen = self._see(request, body)
        return await self._respond(body, body.get("model", "unknown"), seen)

    # Dialect hooks: servers that speak this wire format with their own extras override these.
    def _decorate(self, completion: dict[str, Any]) -> dict[str, Any]:
        """A whole (non-streamed) completion body, as sent."""
        return completion

    def _prelude(self) -> list[bytes]:
        """Stream events sent before the first chunk."""
        return []

    async def _respond(self, body: dict[str, Any], model: str, seen: Seen) -> Response:
        request = seen.request
        assert request is not None, "log the request with _see() first"
        behaviour = self.script.popleft() if self.script else self.default
        if isinstance(behaviour, Hang):
            await _hang(request, behaviour.seconds, seen)
            return JSONResponse({}, status_code=500)
        if isinstance(behaviour, Reset):
            await asyncio.sleep(behaviour.delay)
            await _reset(request.scope, seen)
            return Response(status_code=500)  # never reaches the client: the socket is gone
        if isinstance(behaviour, Fail):
            await asyncio.sleep(behaviour.delay)
            seen.ended, seen.status, seen.outcome = time.monotonic(), behaviour.status, "fail"
            error = {
                "message": behaviour.message,
                "type": behaviour.type,
                "param": None,
                "code": behaviour.code,
            }
            return JSONResponse(
                {"error": error}, status_code=behaviour.status, headers=behaviour.headers
            )
        if isinstance(behaviour, Reply):
            await asyncio.sleep(behaviour.delay)
            seen.ended, seen.status, seen.outcome = time.monotonic(), 200, "reply"
            return JSONResponse(self._decorate(_completion(behaviour, model)))
        prefill = _prefill(body)
        if behaviour.continues and prefill is not None:
            behaviour = behaviour.after(prefill)
        seen.status, seen.outcome = 200, "stream"
        return StreamingResponse(
            self._watched(
                self._stream(behaviour, model, bool(body.get("stream_options")), seen), seen
            ),
            media_type="text/event-stream",
        )

    async def _watched(self, parts: AsyncIterator[bytes], seen: Seen) -> AsyncIterator[bytes]:
        """A stream body that notes in the log when the client hung up on it."""
        try:
            async for part in parts:
                yield part
        except BaseException:  # the client went away mid-body: the stream task is cancelled
            if seen.outcome == "stream":
                seen.outcome = "hung_up"
            raise
        finally:
            seen.ended = seen.ended or time.monotonic()

    async def _stream(self, spec: Stream, model: str, include_usage: bool, seen: Seen) -> Any:
        answered = spec.model or model
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": answered,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()

        await asyncio.sleep(spec.first_delay)
        for event in self._prelude():
            yield event
        yield chunk({"role": "assistant", "content": ""})
        for i, text in enumerate(spec.chunks):
            if spec.cut_after is not None and i >= spec.cut_after:
                seen.ended, seen.outcome = time.monotonic(), "cut"
                return
            if spec.reset_after is not None and i >= spec.reset_after and seen.request:
                await _reset(seen.request.scope, seen)
                return
            if i and spec.between:
                await asyncio.sleep(spec.between)
            if spec.stall_after is not None and i == spec.stall_after:
                await asyncio.sleep(spec.stall)
            if spec.malformed_after is not None and i == spec.malformed_after:
                yield b"data: {not json\n\n"
            if seen.first_chunk is None:
                seen.first_chunk = time.monotonic()
            yield chunk({"content": text})
        for index, call in enumerate(spec.tool_calls or ()):
            args = call.get("arguments", "{}")
            half = len(args) // 2
            first = {
                "index": index,
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": call["name"], "arguments": args[:half]},
            }
            yield chunk({"tool_calls": [first]})
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]})
        if spec.finish is not None:
            yield chunk({}, spec.finish)
        if spec.usage is not None and include_usage:
            usage = {
                "prompt_tokens": spec.usage[0],
                "completion_tokens": spec.usage[1],
                "total_tokens": sum(spec.usage),
            }
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
        if spec.done_after:
            await asyncio.sleep(spec.done_after)
        if spec.done:
            yield b"data: [DONE]\n\n"
        if spec.hold:
            await asyncio.sleep(spec.hold)
        seen.ended = time.monotonic()


class _WithTransport:
    """Hands the connection's transport to the handlers (uvicorn's `send` is bound to its
    request cycle, which holds it), so that `Reset` can cut the connection."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["fake.transport"] = getattr(getattr(send, "__self__", None), "transport", None)
        await self.app(scope, receive, send)


async def _hang(request: Request, seconds: float, seen: Seen) -> None:
    """Say nothing; note when the client hung up (the gateway's per-attempt timeout)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if await request.is_disconnected():
            seen.ended, seen.outcome = time.monotonic(), "hung_up"
            return
        await asyncio.sleep(0.01)
    seen.ended, seen.outcome = time.monotonic(), "timeout"


async def _reset(scope: Scope, seen: Seen) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing upstream or a proxy does."""
    transport = scope.get("fake.transport")
    if transport is None:
        raise RuntimeError("Reset needs uvicorn's transport; serve the fake with serve_app")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    seen.ended, seen.outcome = time.monotonic(), "reset"
    await asyncio.sleep(0.05)  # let the server notice the connection is gone


def _prefill(body: dict[str, Any]) -> str | None:
    """The text of a trailing assistant message: the start of the answer the caller wants."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str):
        return None
    return last["content"]


def _completion(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c.get("arguments", "{}")},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": reply.model or model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": reply.finish, "logprobs": None}
        ],
    }
    if reply.usage is not None:
        body["usage"] = {
            "prompt_tokens": reply.usage[0],
            "completion_tokens": reply.usage[1],
            "total_tokens": sum(reply.usage),
        }
    return body
