"""A local fake of Amazon Bedrock Runtime's Converse and ConverseStream operations.

It speaks the real wire format so that boto3 itself parses what it sends:

* ``POST /model/{modelId}/converse`` answers JSON (``output.message.content``, ``stopReason``,
  ``usage``, ``metrics``);
* ``POST /model/{modelId}/converse-stream`` answers ``application/vnd.amazon.eventstream``: the AWS
  event-stream binary framing (prelude with total length, headers length and prelude CRC32;
  typed headers; JSON payload; message CRC32), encoded here by `encode_message` since botocore only
  ships a decoder;
* errors come as Bedrock sends them: an HTTP status, an ``x-amzn-errortype`` header and a JSON body
  ``{"message": ...}``; errors inside a stream are ``:message-type: exception`` frames.

Model ids carry ``:`` and ``.`` (and ARNs carry ``/``); botocore percent-encodes them in the path,
so the routes take the id with a ``path`` converter.

Tests script it per call with `BedrockFake.add` (or the ``add_*`` helpers); with nothing queued it
answers a short text. Every request is logged in `BedrockFake.requests`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING_HEADER = 7  # the event-stream header value type for a UTF-8 string
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"


class DeliberateDrop(ConnectionAbortedError):
    """Raised inside a streamed body so that the server drops the connection mid-frame."""


class _HideDeliberateDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DeliberateDrop))


_HIDE_DROPS = _HideDeliberateDrops()


# ---- the event-stream encoder -----------------------------------------------------------------


def encode_headers(headers: dict[str, str]) -> bytes:
    """Event-stream headers: name length (1 byte), name, type (7), value length (2), value."""
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 0xFFFF:
            raise ValueError(f"header {name!r} is too long for the event-stream framing")
        out += struct.pack("!B", len(raw_name)) + raw_name
        out += struct.pack("!BH", _STRING_HEADER, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32 of those 8 bytes),
    headers, payload, then the CRC32 of everything before it."""
    raw_headers = encode_headers(headers)
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def encode_event(event_type: str, body: dict[str, Any], *, padding: bool = True) -> bytes:
    """A ``:message-type: event`` frame. Bedrock pads each payload with a ``p`` field; so do we."""
    if padding:
        body = {**body, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[: 4 + len(event_type) % 20]}
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, json.dumps(body).encode("utf-8"))


def encode_exception(exception_type: str, message: str) -> bytes:
    """A ``:message-type: exception`` frame, e.g. ``throttlingException``."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode("utf-8"))


# ---- scripting ---------------------------------------------------------------------------------


@dataclass
class FakeToolUse:
    name: str
    input: dict[str, Any]
    tool_use_id: str = field(default_factory=lambda: f"tooluse_{uuid.uuid4().hex[:22]}")
    fragments: list[str] | None = None  # how the streamed input JSON is split; default: 3 parts


@dataclass
class FakeError:
    status: int
    error_type: str  # e.g. "ThrottlingException"
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Behaviour:
    """What the fake does for one request (to either operation)."""

    text: str | None = "Hello from the fake."
    tool_uses: list[FakeToolUse] = field(default_factory=list)
    stop_reason: str | None = None  # default: tool_use when tool_uses, else end_turn
    usage: tuple[int, int] | None = (12, 7)  # None: a stream sends no metadata event
    delay_s: float = 0.0  # before the response starts
    error: FakeError | None = None  # answered instead of a result
    # streaming only
    text_chunks: list[str] | None = None  # how the text is split; default: about 3 parts
    chunk_delay_s: float = 0.0  # between frames
    stall_after: int | None = None  # after this many frames, pause once for `stall_s`
    stall_s: float = 0.0
    events: list[bytes] | None = None  # raw frames, sent verbatim instead of the built ones
    exception_after: int | None = None  # after this many frames, send `stream_exception`
    stream_exception: tuple[str, str] = ("modelStreamErrorException", "The model stream failed.")
    cut_after: int | None = None  # after this many frames, end the body cleanly
    drop_after: int | None = None  # after this many frames, half a frame, then drop the connection


@dataclass
class RecordedRequest:
    operation: str  # "converse" | "converse-stream"
    model_id: str
    path: str
    raw_path: str
    headers: dict[str, str]
    body: dict[str, Any]


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


class BedrockFake:
    """A scriptable Bedrock Runtime. ``app`` is the ASGI app to hand to `serve_app`."""

    def __init__(self) -> None:
        self.behaviours: deque[Behaviour] = deque()
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.streams_closed_early = 0  # streams whose client went away before the last frame
        # uvicorn logs the exception that drops a connection on purpose; keep test output clean.
        if _HIDE_DROPS not in logging.getLogger("uvicorn.error").filters:
            logging.getLogger("uvicorn.error").addFilter(_HIDE_DROPS)
        self.app = Starlette(
            routes=[
                Route("/model/{model_id:path}/converse", self._converse, methods=["POST"]),
                Route(
                    "/model/{model_id:path}/converse-stream",
                    self._converse_stream,
                    methods=["POST"],
                ),
            ]
        )

    # -- scripting --

    def reset(self) -> None:
        self.behaviours.clear()
        self.requests.clear()
        self.in_flight = 0
        self.max_in_flight = 0
        self.streams_closed_early = 0

    def add(self, behaviour: Behaviour) -> Behaviour:
        self.behaviours.append(behaviour)
        return behaviour

    def add_text(self, text: str, **kw: Any) -> Behaviour:
        return self.add(Behaviour(text=text, **kw))

    def add_tool_use(
        self, name: str, input: dict[str, Any], *, text: str | None = None, **kw: Any
    ) -> FakeToolUse:
        fragments = kw.pop("fragments", None)
        tool_use_id = kw.pop("tool_use_id", None)
        tool = FakeToolUse(name=name, input=input, fragments=fragments)
        if tool_use_id:
            tool.tool_use_id = tool_use_id
        self.add(Behaviour(text=text, tool_uses=[tool], **kw))
        return tool

    def add_error(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Behaviour:
        return self.add(
            Behaviour(error=FakeError(status, error_type, message, headers or {}), **kw)
        )

    # -- handlers --

    async def _record(self, request: Request, operation: str) -> tuple[RecordedRequest, Behaviour]:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        record = RecordedRequest(
            operation=operation,
            model_id=request.path_params["model_id"],
            path=request.url.path,
            raw_path=request.scope.get("raw_path", b"").decode("latin-1"),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        self.requests.append(record)
        behaviour = self.behaviours.popleft() if self.behaviours else Behaviour()
        return record, behaviour

    def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def _sleep(self, request: Request, seconds: float) -> bool:
        """Sleep, waking early (and answering False) if the client went away."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(0.05, left))
            if await request.is_disconnected():
                return False
        return True

    @staticmethod
    def _request_id() -> dict[str, str]:
        return {"x-amzn-RequestId": str(uuid.uuid4())}

    def _error_response(self, error: FakeError) -> Response:
        headers = {
            **self._request_id(),
            "x-amzn-ErrorType": f"{error.error_type}:{_ERROR_NAMESPACE}",
            **error.headers,
        }
        return JSONResponse({"message": error.message}, status_code=error.status, headers=headers)

    def _auth_problem(self, request: Request) -> FakeError | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 Credential="):
            return FakeError(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        return None

    async def _converse(self, request: Request) -> Response:
        self._enter()
        try:
            _, behaviour = await self._record(request, "converse")
            if (problem := self._auth_problem(request)) is not None:
                return self._error_response(problem)
            if behaviour.delay_s and not await self._sleep(request, behaviour.delay_s):
                return Response(status_code=499)
            if behaviour.error is not None:
                return self._error_response(behaviour.error)
            content: list[dict[str, Any]] = []
            if behaviour.text:
                content.append({"text": behaviour.text})
            for tool in behaviour.tool_uses:
                content.append(
                    {
                        "toolUse": {
                            "toolUseId": tool.tool_use_id,
                            "name": tool.name,
                            "input": tool.input,
                        }
                    }
                )
            input_tokens, output_tokens = behaviour.usage or (0, 0)
            body = {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": self._stop_reason(behaviour),
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": output_tokens,
                    "totalTokens": input_tokens + output_tokens,
                },
                "metrics": {"latencyMs": 42},
            }
            return JSONResponse(body, headers=self._request_id())
        finally:
            self.in_flight -= 1

    async def _converse_stream(self, request: Request) -> Response:
        self._enter()
        handed_over = False
        try:
            _, behaviour = await self._record(request, "converse-stream")
            if (problem := self._auth_problem(request)) is not None:
                return self._error_response(problem)
            if behaviour.delay_s and not await self._sleep(request, behaviour.delay_s):
                return Response(status_code=499)
            if behaviour.error is not None:
                return self._error_response(behaviour.error)
            frames = behaviour.events if behaviour.events is not None else self._frames(behaviour)
            handed_over = True
            return StreamingResponse(
                self._send_frames(request, behaviour, frames),
                media_type=EVENTSTREAM_CONTENT_TYPE,
                headers=self._request_id(),
            )
        finally:
            if not handed_over:
                self.in_flight -= 1

    async def _send_frames(
        self, request: Request, behaviour: Behaviour, frames: list[bytes]
    ) -> AsyncIterator[bytes]:
        finished = False
        try:
            for sent, frame in enumerate(frames):
                if behaviour.exception_after is not None and sent == behaviour.exception_after:
                    yield encode_exception(*behaviour.stream_exception)
                    finished = True
                    return
                if behaviour.cut_after is not None and sent == behaviour.cut_after:
                    finished = True
                    return
                if behaviour.drop_after is not None and sent == behaviour.drop_after:
                    yield frame[: len(frame) // 2]
                    finished = True
                    raise DeliberateDrop("the fake drops the connection mid-frame")
                if sent and behaviour.chunk_delay_s:
                    await asyncio.sleep(behaviour.chunk_delay_s)
                if sent == behaviour.stall_after:
                    await asyncio.sleep(behaviour.stall_s)
                yield frame
            if behaviour.exception_after is not None and behaviour.exception_after >= len(frames):
                yield encode_exception(*behaviour.stream_exception)
            finished = True
        finally:
            self.in_flight -= 1
            if not finished:
                self.streams_closed_early += 1

    @staticmethod
    def _stop_reason(behaviour: Behaviour) -> str:
        if behaviour.stop_reason:
            return behaviour.stop_reason
        return "tool_use" if behaviour.tool_uses else "end_turn"

    def _frames(self, behaviour: Behaviour) -> list[bytes]:
        frames = [encode_event("messageStart", {"role": "assistant"})]
        index = 0
        if behaviour.text:
            chunks = behaviour.text_chunks or _split(behaviour.text, 3)
            for chunk in chunks:
                frames.append(
                    encode_event(
                        "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": chunk}}
                    )
                )
            frames.append(encode_event("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        for tool in behaviour.tool_uses:
            start = {"toolUse": {"toolUseId": tool.tool_use_id, "name": tool.name}}
            frames.append(
                encode_event("contentBlockStart", {"contentBlockIndex": index, "start": start})
            )
            for fragment in tool.fragments or _split(json.dumps(tool.input), 3):
                frames.append(
                    encode_event(
                        "contentBlockDelta",
                        {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}},
                    )
                )
            frames.append(encode_event("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        frames.append(encode_event("messageStop", {"stopReason": self._stop_reason(behaviour)}))
        if behaviour.usage is not None:
            input_tokens, output_tokens = behaviour.usage
            usage = {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            }
            frames.append(encode_event("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
        return frames
