"""A stand-in for a self-hosted OpenAI-compatible server (Ollama, older vLLM, llama.cpp).

It speaks the Chat Completions wire format at `/v1/chat/completions` as such servers do, which is
not quite as OpenAI does:

- streams never carry usage: `stream_options` is ignored, or (`refuse_stream_options=True`, as
  older vLLM and Azure versions do) refused with a 400 naming it;
- a streamed tool call arrives whole, in one chunk, without the `index` OpenAI puts on every
  fragment;
- optional fields are left out: no `id`, `created`, `object` or `system_fingerprint`, no
  `logprobs`, and no `usage` in a whole answer either when the scripted `Reply` has none;
- no key is checked.

Scripting (`push` with `Reply`, `Fail`, `Stream`, `Hang`) and the request log are `OpenAIFake`'s.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.openai_fake import OpenAIFake, Seen, Stream


class LocalServerFake(OpenAIFake):
    def __init__(self, *, refuse_stream_options: bool = False) -> None:
        super().__init__("local")
        self.refuse_stream_options = refuse_stream_options

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        seen = self._see(request, body)
        if self.refuse_stream_options and "stream_options" in body:
            seen.status = 400
            error = {
                "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), "
                "'msg': 'Extra inputs are not permitted'}]",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
            return JSONResponse({"object": "error", **error}, status_code=400)
        return await self._respond(body, body.get("model", "unknown"), seen)

    def _decorate(self, completion: dict[str, Any]) -> dict[str, Any]:
        for key in ("id", "created", "object"):
            completion.pop(key, None)
        for choice in completion["choices"]:
            choice.pop("logprobs", None)
        return completion

    async def _stream(self, spec: Stream, model: str, include_usage: bool, seen: Seen) -> Any:
        # `include_usage` is deliberately ignored: these servers send no usage in a stream.
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {
                "model": spec.model or model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(body)}\n\n".encode()

        await asyncio.sleep(spec.first_delay)
        for i, text in enumerate(spec.chunks):
            if spec.cut_after is not None and i >= spec.cut_after:
                seen.ended = time.monotonic()
                return
            if i and spec.between:
                await asyncio.sleep(spec.between)
            yield chunk({"role": "assistant", "content": text})
        for number, call in enumerate(spec.tool_calls or ()):
            whole = {
                "id": f"call_local{number}",
                "type": "function",
                "function": {"name": call["name"], "arguments": call.get("arguments", "{}")},
            }
            yield chunk({"role": "assistant", "content": "", "tool_calls": [whole]})
        if spec.finish is not None:
            yield chunk({"role": "assistant", "content": ""}, spec.finish)
        if spec.done:
            yield b"data: [DONE]\n\n"
        seen.ended = time.monotonic()
