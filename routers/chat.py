"""`POST /v1/chat`: the native endpoint (SPEC "POST /v1/chat")."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request

from app.chat import ChatRequest, StreamEvent, StreamFinish, TextDelta, ToolCallDelta
from app.errors import ProviderError
from app.routing import Call
from routers.common import (
    EventStream,
    JSONBody,
    complete,
    decisions_of,
    open_stream,
    router_headers,
    sse,
    trace_id_of,
    uuid4_hex,
)
from routers.deps import GatewayDep, authenticate, resolve_node
from routers.direct import DirectRoute
from routers.errors import upstream_failure
from routers.schemas import CHAT, CHAT_EVENT, ChatResponse, errors, json_and_sse

router = APIRouter(dependencies=[Depends(authenticate)], route_class=DirectRoute)


def _summary(call: Call, route: str, chat_id: str, started: float) -> dict[str, Any]:
    """Every response field except `message`: shared by the JSON body and the stream's end."""
    answer = call.answer
    usage = answer.usage if answer else None
    body: dict[str, Any] = {
        "id": chat_id,
        "route": route,
        "target": answer.target.name if answer else None,
        "provider": answer.target.provider.name if answer else None,
        "model": answer.model if answer else None,
        "usage": {
            "input_tokens": usage.input_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
        },
        "cost_usd": round(answer.cost_usd, 10) if answer else 0.0,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "decisions": decisions_of(call),
        "trace_id": trace_id_of(call),
    }
    if usage is not None and usage.estimated:
        body["usage"]["estimated"] = True
    return body


@router.post(
    "/v1/chat",
    responses={
        **json_and_sse(ChatResponse, "The answer, or with `stream` its events", CHAT_EVENT),
        **errors(*CHAT),
    },
)
async def chat(body: ChatRequest, request: Request, gateway: GatewayDep) -> Any:
    started = time.perf_counter()
    node = resolve_node(gateway, body.route)
    call = gateway.new_call(body, request.headers)
    chat_id = f"chat-{uuid4_hex()}"

    if body.stream and not body.dry_run:
        first, events = await open_stream(node, call)
        return EventStream(
            _stream(first, events, call, body.route, chat_id, started),
            headers={**router_headers(call, body.route), "cache-control": "no-cache"},
        )

    completion = await complete(node, call)
    result = _summary(call, body.route, chat_id, started)
    if body.dry_run:
        result["dry_run"] = True
        result["message"] = None
        result["finish_reason"] = None
    else:
        result["message"] = completion.message.model_dump()
        result["finish_reason"] = completion.finish_reason
    return JSONBody(result, headers=router_headers(call, body.route))


async def _stream(
    first: StreamEvent,
    events: AsyncIterator[StreamEvent],
    call: Call,
    route: str,
    chat_id: str,
    started: float,
) -> AsyncIterator[bytes]:
    finish: StreamFinish | None = None

    async def all_events() -> AsyncIterator[StreamEvent]:
        yield first
        async for event in events:
            yield event

    try:
        async for event in all_events():
            if type(event) is TextDelta:
                # What sse() gives, without building and encoding the dict for every delta.
                yield b'data: {"type":"delta","text":' + orjson.dumps(event.text) + b"}\n\n"
            elif isinstance(event, ToolCallDelta):
                call_ = event.tool_call
                yield sse(
                    {
                        "type": "tool_call",
                        "index": event.index,
                        "id": call_.id,
                        "name": call_.function.name,
                        "arguments": call_.function.arguments,
                    }
                )
            elif isinstance(event, StreamFinish):
                finish = event
    except ProviderError as error:
        failure = upstream_failure(error, call)
        yield sse({"type": "error", "error": failure.body()["error"]})
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    end = _summary(call, route, chat_id, started)
    end["type"] = "end"
    end["finish_reason"] = finish.finish_reason if finish else None
    if finish is not None and finish.truncated:
        end["truncated"] = True
    yield sse(end)
