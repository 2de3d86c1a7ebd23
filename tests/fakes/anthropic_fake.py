"""A scriptable fake of Anthropic's Messages API (`POST /v1/messages`), speaking its wire format.

Non-streaming answers are a `Message` JSON object; `"stream": true` answers `text/event-stream` with
the real event sequence, each event with its `event:` line (the SDK ignores events without one):
message_start, ping, content_block_start/delta/stop (text_delta, input_json_delta), message_delta,
message_stop. Errors are Anthropic error bodies
`{"type": "error", "error": {"type", "message"}}` with the matching status and a `request-id`.

Tests queue `Reply` objects (`fake.queue(Reply.answer("hi"), Reply.fail(429, retry_after=7))`); each
request takes the next one, or a default text answer when none is queued. Every request is logged
(`fake.requests`) with its path, lower-cased headers and parsed JSON body.

Like the real API (version 2026-10-21), the fake refuses requests that break the Messages API's
rules: missing `max_tokens`/`model`, a `system` role inside `messages`, non-alternating roles, a
`tool_result` without a matching `tool_use` in the previous assistant turn, whitespace-only stop
sequences, sampling parameters (unless `anthropic-version` is 2023-06-01), and requests without
a key.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ids = itertools.count(1)


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str = ""


@dataclass
class Reply:
    """One scripted answer. Build with the class methods; tweak fields for the unusual cases."""

    text: str | None = "Hello from the fake."
    tools: list[ToolUse] = field(default_factory=list)
    stop_reason: str | None = None  # default: tool_use when tools, else end_turn
    input_tokens: int = 11
    output_tokens: int = 7
    model: str | None = None  # default: the model the request named
    delay: float = 0.0  # seconds to sleep before answering
    # errors
    status: int = 200
    error_type: str | None = None
    error_message: str = "error"
    headers: dict[str, str] = field(default_factory=dict)
    # streaming
    events: list[tuple[str, dict[str, Any]]] | None = None  # send exactly these (event, data)
    cut_after: int | None = None  # end the body cleanly after N events (no message_stop)
    abort_after: int | None = None  # break the connection after N events
    error_after: int | None = None  # send an `error` event after N events, then end
    stream_error_type: str = "overloaded_error"
    stream_error_message: str = "Overloaded"
    event_delay: float = 0.0  # seconds between stream events
    text_chunk: int = 4  # characters per text_delta
    json_fragments: int = 3  # input_json_delta fragments per tool_use block
    # `text` is the whole answer, and a request ending in an assistant turn that begins it (a
    # prefill) gets only the rest, as Claude continues a prefill.
    continues: bool = False

    @classmethod
    def answer(cls, text: str, **kw: Any) -> Reply:
        return cls(text=text, **kw)

    @classmethod
    def tool_use(
        cls, name: str, input: dict[str, Any], *, id: str = "", text: str | None = None, **kw: Any
    ) -> Reply:
        return cls(text=text, tools=[ToolUse(name, input, id)], **kw)

    @classmethod
    def fail(
        cls,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        retry_after: str | float | None = None,
        **kw: Any,
    ) -> Reply:
        headers = dict(kw.pop("headers", {}))
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        return cls(
            status=status,
            error_type=error_type or ERROR_TYPES.get(status, "api_error"),
            error_message=message or f"fake error {status}",
            headers=headers,
            **kw,
        )


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any


class AnthropicFake:
    """`fake.app` is the ASGI app; serve it with `tests.fakes.server.serve_app`."""

    def __init__(self, *, api_key: str | None = "test-key") -> None:
        self.api_key = api_key  # None: accept any key
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    def queue(self, *replies: Reply) -> AnthropicFake:
        self._script.extend(replies)
        return self

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # ---- the endpoint -------------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(RecordedRequest(request.url.path, headers, body))
        reply = self._script.popleft() if self._script else Reply()

        if reply.delay:
            await asyncio.sleep(reply.delay)
        if not self._authorised(headers):
            return _error(401, "authentication_error", "invalid x-api-key")
        if reply.status >= 400:
            return _error(
                reply.status,
                reply.error_type or "api_error",
                reply.error_message,
                reply.headers,
            )
        if problem := _validate(body, headers):
            return _error(400, "invalid_request_error", problem)

        prefill = _prefill(body) if reply.continues else None
        if prefill and reply.text and reply.text.startswith(prefill):
            reply = replace(reply, text=reply.text[len(prefill) :])
        model = reply.model or str(body.get("model"))
        if body.get("stream"):
            return StreamingResponse(
                self._sse(reply, model),
                media_type="text/event-stream",
                headers={"request-id": _request_id(), "cache-control": "no-cache", **reply.headers},
            )
        return JSONResponse(
            _message(reply, model, streaming=False),
            headers={"request-id": _request_id(), **reply.headers},
        )

    def _authorised(self, headers: dict[str, str]) -> bool:
        key = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = key or auth[7:]
        if not key:
            return False
        return self.api_key is None or key == self.api_key

    async def _sse(self, reply: Reply, model: str) -> AsyncIterator[bytes]:
        events = reply.events if reply.events is not None else _stream_events(reply, model)
        for count, (name, data) in enumerate(events):
            if reply.cut_after is not None and count >= reply.cut_after:
                return
            if reply.abort_after is not None and count >= reply.abort_after:
                raise ConnectionAbortedError("the fake broke the stream on purpose")
            if reply.error_after is not None and count >= reply.error_after:
                error = {
                    "type": "error",
                    "error": {
                        "type": reply.stream_error_type,
                        "message": reply.stream_error_message,
                    },
                }
                yield _sse_bytes("error", error)
                return
            if reply.event_delay and count:
                await asyncio.sleep(reply.event_delay)
            yield _sse_bytes(name, data)


# ---- wire shapes ------------------------------------------------------------------------------


def _request_id() -> str:
    return f"req_fake{next(_ids):06d}"


def _error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    request_id = _request_id()
    return JSONResponse(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        },
        status_code=status,
        headers={"request-id": request_id, **(headers or {})},
    )


def _tool_id(tool: ToolUse, index: int) -> str:
    return tool.id or f"toolu_fake{index:02d}"


def _stop_reason(reply: Reply) -> str:
    return reply.stop_reason or ("tool_use" if reply.tools else "end_turn")


def _message(reply: Reply, model: str, *, streaming: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if not streaming:
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for index, tool in enumerate(reply.tools):
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(tool, index),
                    "name": tool.name,
                    "input": tool.input,
                }
            )
    return {
        "id": f"msg_fake{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None if streaming else _stop_reason(reply),
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": 1 if streaming else reply.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _stream_events(reply: Reply, model: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {"type": "message_start", "message": _message(reply, model, streaming=True)},
        ),
        ("ping", {"type": "ping"}),
    ]
    index = 0
    if reply.text:
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        step = max(1, reply.text_chunk)
        for start in range(0, len(reply.text), step):
            delta = {"type": "text_delta", "text": reply.text[start : start + step]}
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for number, tool in enumerate(reply.tools):
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": _tool_id(tool, number),
                        "name": tool.name,
                        "input": {},
                    },
                },
            )
        )
        # As the API does: a first empty fragment, then the JSON text in pieces.
        for fragment in ["", *_split(json.dumps(tool.input), reply.json_fragments)]:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _sse_bytes(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


# ---- request validation (what the real API refuses) -----------------------------------------


def _validate(body: Any, headers: dict[str, str]) -> str | None:
    if not isinstance(body, dict):
        return "The request body is not valid JSON."
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    if headers.get("anthropic-version", "") >= "2026-10-21":
        for name in ("temperature", "top_p", "top_k"):
            if name in body:
                return f"{name}: Extra inputs are not permitted"
    for stop in body.get("stop_sequences") or ():
        if not str(stop).strip():
            return "stop_sequences: each stop sequence must contain non-whitespace"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    previous: dict[str, Any] | None = None
    for number, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{number}.role: Input should be 'user' or 'assistant'"
        if previous is not None and previous["role"] == role:
            return "messages: roles must alternate between 'user' and 'assistant'"
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{number}: content must be a non-empty list"
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{number}: text content blocks must be non-empty"
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if results:
            if blocks[: len(results)] != results:
                return f"messages.{number}: tool_result blocks must come first"
            uses = set()
            if previous is not None and isinstance(previous.get("content"), list):
                uses = {b.get("id") for b in previous["content"] if b.get("type") == "tool_use"}
            for result in results:
                if result.get("tool_use_id") not in uses:
                    return (
                        f"messages.{number}: unexpected `tool_use_id` found in `tool_result` "
                        "blocks: each tool_result needs a tool_use in the previous message"
                    )
        for block in blocks:
            if block.get("type") == "tool_use" and not isinstance(block.get("input"), dict):
                return f"messages.{number}: tool_use.input must be an object"
        previous = message
    final = previous["content"] if previous and previous["role"] == "assistant" else None
    final_text = final if isinstance(final, str) else _last_text(final or [])
    if final_text and final_text != final_text.rstrip():
        return "messages: final assistant content cannot end with trailing whitespace"
    return None


def _last_text(blocks: list[dict[str, Any]]) -> str | None:
    last = blocks[-1] if blocks else {}
    return last.get("text") if last.get("type") == "text" else None


def _prefill(body: dict[str, Any]) -> str | None:
    """The text a final assistant turn puts in the model's mouth, which it continues."""
    last = body["messages"][-1]
    if last["role"] != "assistant":
        return None
    content = last["content"]
    return content if isinstance(content, str) else _last_text(content)
