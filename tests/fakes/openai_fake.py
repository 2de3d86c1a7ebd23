"""A local stand-in for the OpenAI Chat Completions API, scriptable per test.

It speaks the real wire format (JSON bodies, SSE chunks ending in `data: [DONE]`, OpenAI error
bodies, Retry-After headers) so the official SDK parses it. Each incoming request takes the next
scripted behaviour (or the default answer) and is logged with its timing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


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
    malformed_after: int | None = None  # insert a garbage line after this many chunks


@dataclass
class Hang:
    seconds: float = 30.0


Behaviour = Reply | Fail | Stream | Hang


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    ended: float | None = None
    status: int | None = None
    query: dict[str, str] = field(default_factory=dict)


class OpenAIFake:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.script: deque[Behaviour] = deque()
        self.default: Behaviour = Reply()
        self.log: list[Seen] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    def push(self, *behaviours: Behaviour) -> OpenAIFake:
        self.script.extend(behaviours)
        return self

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [seen.body for seen in self.log]

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    def _see(self, request: Request, body: dict[str, Any]) -> Seen:
        seen = Seen(
            request.url.path,
            body,
            dict(request.headers),
            time.monotonic(),
            query=dict(request.query_params),
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
        behaviour = self.script.popleft() if self.script else self.default
        if isinstance(behaviour, Hang):
            await asyncio.sleep(behaviour.seconds)
            return JSONResponse({}, status_code=500)
        if isinstance(behaviour, Fail):
            await asyncio.sleep(behaviour.delay)
            seen.ended, seen.status = time.monotonic(), behaviour.status
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
            seen.ended, seen.status = time.monotonic(), 200
            return JSONResponse(self._decorate(_completion(behaviour, model)))
        seen.status = 200
        return StreamingResponse(
            self._stream(behaviour, model, bool(body.get("stream_options")), seen),
            media_type="text/event-stream",
        )

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
                seen.ended = time.monotonic()
                return
            if i and spec.between:
                await asyncio.sleep(spec.between)
            if spec.malformed_after is not None and i == spec.malformed_after:
                yield b"data: {not json\n\n"
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
        if spec.done:
            yield b"data: [DONE]\n\n"
        seen.ended = time.monotonic()


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
