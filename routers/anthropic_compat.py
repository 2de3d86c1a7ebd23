"""Anthropic-compatible endpoints: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

An unmodified Anthropic SDK works against these (`x-api-key` or bearer; any `anthropic-version`).
`model` names a route, a model alias or `provider/model-id`; the request runs through the same
routing tree as on the other endpoints, and whatever provider answers, the caller gets Anthropic's
message shape, stream events and errors (`routers/anthropic_errors.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.chat import ChatRequest, StreamEvent, StreamFinish, TextDelta, ToolCall, ToolCallDelta
from app.errors import ProviderError, RouterError, UpstreamError
from app.routing import Call
from providers.base import estimate_input_tokens
from routers.anthropic_errors import AnthropicRoute, anthropic_error
from routers.anthropic_wire import (
    STOP_REASONS,
    CountTokensRequest,
    MessagesRequest,
    content_blocks,
    tool_input,
)
from routers.common import (
    EventStream,
    answered_model,
    complete,
    dumps,
    open_stream,
    router_headers,
    router_summary,
    sse,
)
from routers.deps import GatewayDep, authenticate, resolve_node
from routers.errors import upstream_failure
from routers.schemas import (
    ANTHROPIC_EVENT,
    AnthropicMessage,
    TokenCount,
    anthropic_errors,
    json_and_sse,
)

router = APIRouter(route_class=AnthropicRoute, dependencies=[Depends(authenticate)])


def _canonical(body: MessagesRequest) -> ChatRequest:
    try:
        return body.canonical()
    except ValidationError as exc:  # a turn the canonical chat cannot hold
        raise RequestValidationError(exc.errors()) from None


def _usage(call: Call) -> dict[str, Any]:
    usage = call.answer.usage if call.answer else None
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    out: dict[str, Any] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    if usage.estimated:
        out["estimated"] = True
    return out


@router.post(
    "/v1/messages",
    responses={
        **json_and_sse(
            AnthropicMessage, "Anthropic's Message, or with `stream` its events", ANTHROPIC_EVENT
        ),
        **anthropic_errors(400, 402, 404, 504, 529),
    },
)
async def messages(body: MessagesRequest, request: Request, gateway: GatewayDep) -> Any:
    node = resolve_node(gateway, body.model)
    call = gateway.new_call(_canonical(body), request.headers)
    call.notes.extend(body.not_applied())
    message_id = f"msg_{uuid.uuid4().hex}"

    if body.stream:
        first, events = await open_stream(node, call)
        return EventStream(
            _stream(first, events, call, body.model, message_id),
            headers={**router_headers(call, body.model), "cache-control": "no-cache"},
        )

    completion = await complete(node, call)
    result = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": answered_model(call, body.model),
        "content": content_blocks(completion),
        "stop_reason": STOP_REASONS[completion.finish_reason],
        "stop_sequence": None,
        "usage": _usage(call),
        "router": router_summary(call, body.model),
    }
    return JSONResponse(result, headers=router_headers(call, body.model))


@router.post(
    "/v1/messages/count_tokens",
    responses={
        200: {"model": TokenCount},
        **anthropic_errors(400, 404),
    },
)
async def count_tokens(body: CountTokensRequest, gateway: GatewayDep) -> JSONResponse:
    """No provider is asked: the count is the gateway's estimate, and says so."""
    resolve_node(gateway, body.model)
    try:
        messages, tools = body.canonical_messages(), body.canonical_tools()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    result = {"input_tokens": estimate_input_tokens(messages, tools), "estimated": True}
    return JSONResponse(
        result, headers={"x-router-route": body.model, "x-router-estimated": "true"}
    )


# ---- streaming ---------------------------------------------------------------------------------


def _event(data: dict[str, Any]) -> bytes:
    return sse(data, event=data["type"])


def _error_event(error: RouterError) -> bytes:
    return _event(anthropic_error(error)[1])


class _Blocks:
    """Numbers content blocks and opens and closes them: text runs between whole tool calls."""

    def __init__(self) -> None:
        self.count = 0
        self.text_open = False

    def _start(self, block: dict[str, Any]) -> bytes:
        self.count += 1
        return _event(
            {"type": "content_block_start", "index": self.count - 1, "content_block": block}
        )

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event({"type": "content_block_delta", "index": self.count - 1, "delta": delta})

    def close(self) -> list[bytes]:
        if not self.text_open:
            return []
        self.text_open = False
        return [_event({"type": "content_block_stop", "index": self.count - 1})]

    def text(self, text: str) -> list[bytes]:
        if not text:
            return []
        out = []
        if not self.text_open:
            out.append(self._start({"type": "text", "text": ""}))
            self.text_open = True
        out.append(self._delta({"type": "text_delta", "text": text}))
        return out

    def tool(self, call: ToolCall) -> list[bytes]:
        arguments = dumps(tool_input(call))  # refuses arguments that are not a JSON object
        out = self.close()
        block = {"type": "tool_use", "id": call.id, "name": call.function.name, "input": {}}
        out.append(self._start(block))
        out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        out.append(_event({"type": "content_block_stop", "index": self.count - 1}))
        return out


async def _stream(
    first: StreamEvent,
    events: AsyncIterator[StreamEvent],
    call: Call,
    requested: str,
    message_id: str,
) -> AsyncIterator[bytes]:
    """Anthropic's event sequence: message_start, ping, content blocks, message_delta (stop
    reason and usage), message_stop; or an `error` event once output has begun."""
    request = call.request
    start = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": answered_model(call, requested),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # The provider's count arrives with the finish: until then, the gateway's estimate.
        "usage": {
            "input_tokens": estimate_input_tokens(request.messages, request.tools),
            "output_tokens": 0,
        },
    }
    yield _event({"type": "message_start", "message": start})
    yield _event({"type": "ping"})

    async def all_events() -> AsyncIterator[StreamEvent]:
        yield first
        async for event in events:
            yield event

    blocks = _Blocks()
    finish: StreamFinish | None = None
    try:
        async for event in all_events():
            if isinstance(event, TextDelta):
                for chunk in blocks.text(event.text):
                    yield chunk
            elif isinstance(event, ToolCallDelta):
                for chunk in blocks.tool(event.tool_call):
                    yield chunk
            elif isinstance(event, StreamFinish):
                finish = event
    except ProviderError as error:
        yield _error_event(upstream_failure(error, call))
        return
    except RouterError as error:
        yield _error_event(error)
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if finish is None or finish.truncated:
        # The upstream stopped without its terminator: never pass that off as a full answer.
        cut = UpstreamError(
            "the provider's stream ended before its finish", code="stream_truncated"
        )
        yield _error_event(cut)
        return
    for chunk in blocks.close():
        yield chunk
    delta = {"stop_reason": STOP_REASONS[finish.finish_reason], "stop_sequence": None}
    yield _event({"type": "message_delta", "delta": delta, "usage": _usage(call)})
    yield _event({"type": "message_stop"})
