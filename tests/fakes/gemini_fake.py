"""A local stand-in for the Gemini API (generativelanguage.googleapis.com), on the real wire format.

It answers `POST /{version}/models/{model}:generateContent` and
`POST /{version}/models/{model}:streamGenerateContent?alt=sse` with `GenerateContentResponse` JSON
(camelCase, as Google sends it), streams as server-sent events (`data: {...}` blocks separated by a
blank line), and fails with Google's error envelope
`{"error": {"code", "message", "status", "details"}}`.

Tests script it with a queue of `Reply` objects (one is consumed per request; an empty queue answers
a plain text reply) and read `requests` to see what the SDK actually sent.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

DEFAULT_USAGE: dict[str, int] = {
    "promptTokenCount": 11,
    "candidatesTokenCount": 7,
    "totalTokenCount": 18,
}


@dataclass
class FunctionCallSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # Gemini 3 sends one; older models do not
    thought_signature: str | None = None  # base64 text, as on the wire


@dataclass
class Reply:
    """One scripted answer. Every field has a sensible default: `Reply()` answers "Hello"."""

    text: str | None = "Hello"
    function_calls: list[FunctionCallSpec] = field(default_factory=list)
    finish_reason: str | None = "STOP"
    usage: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_USAGE))
    model_version: str | None = "gemini-test-001"
    response_id: str | None = "resp-1"
    block_reason: str | None = None  # promptFeedback.blockReason: the prompt itself was blocked
    # failure
    status: int = 200
    error_message: str = "error"
    error_status: str | None = None  # Google's status name; derived from `status` when None
    error_details: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    # timing
    delay: float = 0.0  # before answering (or before the first stream chunk)
    chunk_delay: float = 0.0  # between stream chunks
    raw: dict[str, Any] | None = None  # a whole generateContent body, sent as is
    # streaming
    chunks: list[dict[str, Any]] | None = None  # raw GenerateContentResponse chunks to stream
    text_chunks: int = 3  # how many pieces the text is split into when streaming
    cut: bool = False  # end the stream cleanly before the chunk carrying finishReason
    abort: bool = False  # drop the connection mid-stream (after the first chunk)


def retry_info(delay: str) -> dict[str, Any]:
    """A `google.rpc.RetryInfo` error detail, e.g. `retry_info("7s")`."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def error_info(reason: str, domain: str = "googleapis.com") -> dict[str, Any]:
    """A `google.rpc.ErrorInfo` error detail, e.g. `error_info("API_KEY_INVALID")`."""
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}


class _Abort(Exception):
    """Raised inside a streaming body to make the server drop the connection."""


class GeminiFake:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[Route("/{version}/models/{target:path}", self._handle, methods=["POST"])]
        )

    # ---- scripting -------------------------------------------------------------------------

    def reset(self) -> None:
        self.replies.clear()
        self.requests.clear()

    def push(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    # ---- wire ------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        target = request.path_params["target"]
        model, _, method = target.rpartition(":")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        self.requests.append(
            {
                "path": request.url.path,
                "query": dict(request.query_params),
                "version": request.path_params["version"],
                "model": model,
                "method": method,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
            }
        )
        reply = self.replies.popleft() if self.replies else Reply()
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, f"Method {method!r} not found.", "NOT_FOUND", [], {})
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return _error(
                reply.status,
                reply.error_message,
                reply.error_status or _STATUS_NAMES.get(reply.status, "UNKNOWN"),
                reply.error_details,
                reply.headers,
            )
        if method == "generateContent":
            body = reply.raw if reply.raw is not None else _whole(reply, model)
            return JSONResponse(body, headers=reply.headers)
        if request.query_params.get("alt") != "sse":
            # Without alt=sse Google streams one JSON array; the SDK always asks for SSE.
            return _error(400, "this fake only streams with alt=sse", "INVALID_ARGUMENT", [], {})
        return StreamingResponse(
            self._sse(reply, model), media_type="text/event-stream", headers=reply.headers
        )

    async def _sse(self, reply: Reply, model: str) -> AsyncIterator[bytes]:
        chunks = reply.chunks if reply.chunks is not None else _split(reply, model)
        if reply.cut and reply.chunks is None:
            chunks = chunks[:-1]
        for i, chunk in enumerate(chunks):
            if i and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            if reply.abort and i == 1:
                raise _Abort("connection dropped on purpose")
            yield b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
        if reply.abort:
            raise _Abort("connection dropped on purpose")


def _error(
    status: int,
    message: str,
    status_name: str,
    details: list[dict[str, Any]],
    headers: dict[str, str],
) -> JSONResponse:
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _envelope(reply: Reply, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if reply.usage is not None:
        out["usageMetadata"] = reply.usage
    if reply.model_version is not None:
        out["modelVersion"] = reply.model_version or model
    if reply.response_id is not None:
        out["responseId"] = reply.response_id
    return out


def _call_part(call: FunctionCallSpec) -> dict[str, Any]:
    function_call: dict[str, Any] = {"name": call.name, "args": call.args}
    if call.id is not None:
        function_call["id"] = call.id
    part: dict[str, Any] = {"functionCall": function_call}
    if call.thought_signature is not None:
        part["thoughtSignature"] = call.thought_signature
    return part


def _candidate(parts: list[dict[str, Any]], finish_reason: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"index": 0}
    if parts:
        candidate["content"] = {"role": "model", "parts": parts}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    return candidate


def _whole(reply: Reply, model: str) -> dict[str, Any]:
    out = _envelope(reply, model)
    if reply.block_reason is not None:
        out["promptFeedback"] = {"blockReason": reply.block_reason, "safetyRatings": []}
        return out
    parts: list[dict[str, Any]] = []
    if reply.text:
        parts.append({"text": reply.text})
    parts.extend(_call_part(call) for call in reply.function_calls)
    out["candidates"] = [_candidate(parts, reply.finish_reason)]
    return out


def _split(reply: Reply, model: str) -> list[dict[str, Any]]:
    """Stream chunks as Gemini sends them: text pieces, then calls, finishReason and usage last."""
    if reply.block_reason is not None:
        return [_whole(reply, model)]
    base = {k: v for k, v in _envelope(reply, model).items() if k != "usageMetadata"}
    text = reply.text or ""
    pieces: list[str] = []
    if text:
        n = max(1, reply.text_chunks)
        step = max(1, -(-len(text) // n))
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
    chunks: list[dict[str, Any]] = [
        {**base, "candidates": [_candidate([{"text": piece}], None)]} for piece in pieces
    ]
    if reply.function_calls:
        parts = [_call_part(call) for call in reply.function_calls]
        chunks.append({**base, "candidates": [_candidate(parts, None)]})
    final: dict[str, Any] = {**base, "candidates": [_candidate([], reply.finish_reason)]}
    if reply.usage is not None:
        final["usageMetadata"] = reply.usage
    if chunks and reply.finish_reason is not None:
        # Gemini puts finishReason (and the final usage) on the last content chunk.
        last = chunks[-1]
        last["candidates"][0]["finishReason"] = reply.finish_reason
        if reply.usage is not None:
            last["usageMetadata"] = reply.usage
        return chunks
    chunks.append(final)
    return chunks
