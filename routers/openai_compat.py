"""OpenAI-compatible endpoints: `POST /v1/chat/completions` and `GET /v1/models`.

An unmodified OpenAI SDK works against these. `model` names a route, a model alias or
`provider/model-id`; the reported `model` is the one that actually answered.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.chat import (
    ChatRequest,
    Message,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Tool,
    ToolCallDelta,
    ToolChoice,
)
from app.errors import InvalidRequest, ProviderError
from app.routing import Call
from routers.common import (
    EventStream,
    JSONBody,
    answered_model,
    complete,
    dumps,
    open_stream,
    router_headers,
    router_summary,
    uuid4_hex,
)
from routers.deps import GatewayDep, authenticate, resolve_node
from routers.direct import DirectRoute
from routers.errors import upstream_failure
from routers.schemas import AUTHED, CHAT, ChatCompletion, ModelList, errors, json_and_sse

router = APIRouter(dependencies=[Depends(authenticate)], route_class=DirectRoute)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body. Fields the gateway does not use are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    n: int = 1

    def canonical(self) -> ChatRequest:
        if self.n != 1:
            raise InvalidRequest("only n=1 is supported", code="unsupported_parameter")
        try:
            return self._canonical()
        except ValidationError as exc:  # a field the canonical request refuses
            raise RequestValidationError(exc.errors()) from None

    def _canonical(self) -> ChatRequest:
        return ChatRequest(
            route=self.model,
            messages=self.messages,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=self.stop,  # type: ignore[arg-type]  # the validator makes it a list
            tools=self.tools,
            tool_choice=self.tool_choice,
            stream=self.stream,
            user=self.user,
            metadata=self.metadata or {},
        )


def _usage(call: Call) -> dict[str, Any]:
    usage = call.answer.usage if call.answer else None
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    result: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.estimated:  # the provider reported none: counted here (an extra field SDKs keep)
        result["estimated"] = True
    return result


@router.post(
    "/v1/chat/completions",
    responses={
        **json_and_sse(ChatCompletion, "OpenAI's completion, or with `stream` its chunks"),
        **errors(*CHAT),
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, gateway: GatewayDep
) -> Any:
    node = resolve_node(gateway, body.model)
    call = gateway.new_call(body.canonical(), request.headers)
    completion_id = f"chatcmpl-{uuid4_hex()}"
    created = int(time.time())

    if body.stream:
        first, events = await open_stream(node, call)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(
            _stream(first, events, call, body.model, completion_id, created, include_usage),
            headers={**router_headers(call, body.model), "cache-control": "no-cache"},
        )

    completion = await complete(node, call)
    message: dict[str, Any] = {"role": "assistant", "content": completion.message.content}
    if completion.message.tool_calls:
        message["tool_calls"] = [c.model_dump() for c in completion.message.tool_calls]
    result = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": answered_model(call, body.model),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(call),
        "router": router_summary(call, body.model),
    }
    return JSONBody(result, headers=router_headers(call, body.model))


async def _stream(
    first: StreamEvent,
    events: AsyncIterator[StreamEvent],
    call: Call,
    requested: str,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    # Every chunk is the same JSON object but for the model and its delta: its bytes up to the
    # delta are built once per model (the model is the serving target's, then the answer's).
    # The bytes are what json.dumps(separators=(",", ":"), ensure_ascii=False) gives.
    head = b'data: {"id":%b,"object":"chat.completion.chunk","created":%d,"model":' % (
        orjson.dumps(completion_id),
        created,
    )
    prefix_model: str | None = None
    prefix = b""

    def chunk(delta: bytes, finish: bytes = b"null") -> bytes:
        nonlocal prefix_model, prefix
        model = answered_model(call, requested)
        if model != prefix_model:
            prefix_model = model
            prefix = head + orjson.dumps(model) + b',"choices":[{"index":0,"delta":'
        return prefix + delta + b',"finish_reason":' + finish + b',"logprobs":null}]}\n\n'

    def encoded(event: StreamEvent) -> bytes:
        if type(event) is TextDelta:
            return chunk(b'{"content":' + orjson.dumps(event.text) + b"}")
        if type(event) is ToolCallDelta:
            tool_call = {"index": event.index, **event.tool_call.model_dump()}
            return chunk(orjson.dumps({"tool_calls": [tool_call]}))
        return b""

    def usage_chunk() -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": answered_model(call, requested),
            "choices": [],
            "usage": _usage(call),
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    finish: StreamFinish | None = None
    # The opening chunk goes out with the first event, which has already arrived.
    opening = chunk(b'{"role":"assistant","content":""}')
    try:
        if type(first) is StreamFinish:
            finish = first
            yield opening
        else:
            yield opening + encoded(first)
        async for event in events:
            if type(event) is StreamFinish:
                finish = event
            elif data := encoded(event):
                yield data
    except ProviderError as error:
        # After output has begun an error cannot change the status: OpenAI SDKs raise on a
        # chunk that carries an `error` object.
        failure = upstream_failure(error, call)
        yield f"data: {dumps(failure.body())}\n\n".encode()
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    # What ends the stream goes out in one piece.
    if finish is None or finish.truncated:
        # The upstream stopped without its terminator: never pass that off as a full answer.
        # The usage it reported, if any, still goes first: those tokens were spent.
        end = b""
        if include_usage and finish is not None and not finish.usage.estimated:
            end = usage_chunk()
        error = {
            "type": "upstream_error",
            "code": "stream_truncated",
            "message": "the provider's stream ended before its finish",
        }
        yield end + f"data: {dumps({'error': error})}\n\n".encode()
        return
    end = chunk(b"{}", orjson.dumps(finish.finish_reason))
    if include_usage:
        end += usage_chunk()
    yield end + b"data: [DONE]\n\n"


@router.get("/v1/models", responses={200: {"model": ModelList}, **errors(*AUTHED)})
async def list_models(gateway: GatewayDep) -> dict[str, Any]:
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": f"llm-router:{kind}"}
        for name, kind in gateway.names()
    ]
    return {"object": "list", "data": data}
