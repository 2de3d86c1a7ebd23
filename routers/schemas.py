"""What each endpoint answers, as OpenAPI declares it: the bodies, their statuses, and errors.

The endpoints build their bodies by hand (dicts, so that a stream's last event and the JSON body
share one summary); these models are the contract those dicts are held to. They are used for
the OpenAPI document only (`responses=` on each route), and the fuzz suite checks every answer
the gateway gives against them (tests/test_fuzz_schema.py). Every error status an endpoint can
answer is declared; FastAPI's own 422 is removed, because the gateway answers 400 instead
(`install`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, RootModel

# ---- errors -----------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    type: str
    message: str
    code: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """SPEC's error envelope, OpenAI's shape: on every endpoint but `/v1/messages`."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class AnthropicErrorBody(BaseModel):
    """Anthropic's error shape, on `/v1/messages` (routers/anthropic_errors.py)."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class EitherErrorBody(RootModel[AnthropicErrorBody | ErrorBody]):
    """On `/v1/messages`, a refusal made before the endpoint runs (a body over the size limit,
    a draining gateway) is in SPEC's shape; the endpoint's own errors are in Anthropic's."""


_WHY = {
    400: "Invalid request: malformed JSON, wrong types, empty messages",
    401: "No valid API key",
    402: "No target fits the request's max_cost_usd, or the caller's budget is spent",
    403: "Refused: admin endpoints are disabled",
    404: "Unknown route or model",
    413: "The body, or its number of messages, is over the limit",
    429: "Rate limited (Retry-After says when to come back)",
    431: "The request's headers are over the limit",
    500: "Internal error",
    502: "Every target failed; details.attempts lists each",
    503: "The gateway is shutting down",
    504: "The upstream timed out",
    529: "Every target failed or is overloaded (Anthropic's overloaded_error)",
}


def errors(*statuses: int, model: type[BaseModel] = ErrorBody) -> dict[int | str, Any]:
    """`responses=` entries for these error statuses, with the error body's schema."""
    return {status: {"model": model, "description": _WHY[status]} for status in statuses}


# Refusals made by middleware, before any endpoint runs, on every path but the probes.
EDGE = (413, 431, 503)
AUTHED = (401, 429, 500, *EDGE)  # any endpoint behind caller auth
CHAT = (400, 402, 404, 502, 504, *AUTHED)


def anthropic_errors(*statuses: int) -> dict[int | str, Any]:
    """Anthropic-shaped errors, and the edge's refusals in either shape."""
    return {
        **errors(*statuses, 401, 429, 500, model=AnthropicErrorBody),
        **errors(*EDGE, model=EitherErrorBody),
    }


# ---- chat bodies ------------------------------------------------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class DecisionOut(BaseModel):
    policy: str
    at: str
    outcome: str
    detail: dict[str, Any]


class UsageOut(_Open):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    estimated: bool | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(_Open):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] = Field(default_factory=list)


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class ChatResponse(BaseModel):
    """`POST /v1/chat`'s JSON body (SPEC). With `dry_run`, message and finish_reason are null."""

    id: str
    route: str
    target: str | None
    provider: str | None
    model: str | None
    message: AssistantMessageOut | None
    finish_reason: FinishReason | None
    usage: UsageOut
    cost_usd: float = Field(ge=0)
    latency_ms: float = Field(ge=0)
    decisions: list[DecisionOut]
    trace_id: str | None
    dry_run: bool | None = None


class RouterSummary(BaseModel):
    """The gateway's own account, carried as `router` in the compatible dialects."""

    route: str
    target: str | None
    provider: str | None
    cost_usd: float = Field(ge=0)
    decisions: list[DecisionOut]


class CompletionMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class CompletionChoice(BaseModel):
    index: int
    message: CompletionMessageOut
    finish_reason: FinishReason
    logprobs: None = None


class CompletionUsage(_Open):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class ChatCompletion(BaseModel):
    """`POST /v1/chat/completions`'s JSON body: OpenAI's, plus `router`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice] = Field(min_length=1, max_length=1)
    usage: CompletionUsage
    router: RouterSummary


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class AnthropicUsage(_Open):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)


class AnthropicMessage(BaseModel):
    """`POST /v1/messages`'s JSON body: Anthropic's Message, plus `router`."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None
    usage: AnthropicUsage
    router: RouterSummary


class TokenCount(BaseModel):
    input_tokens: int = Field(ge=0)
    estimated: bool


# ---- operations -------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    routes: int | None = None
    providers: int | None = None


class Reloaded(BaseModel):
    status: Literal["reloaded"]
    source: str | None
    providers: list[str]
    routes: list[str]
    state: str


class Stats(_Open):
    """`GET /v1/stats`: the process and its per-provider-and-model report (app/stats.py)."""

    pid: int


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _event(payload: dict[str, Any] | None) -> dict[str, Any]:
    """One server-sent event (OpenAPI before 3.2: `schema` describes each event); `payload`,
    when given, is the schema of its `data` read as JSON."""
    data: dict[str, Any] = {"type": "string"}
    if payload is not None:
        data |= {"contentMediaType": "application/json", "contentSchema": payload}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": data, "event": {"type": "string"}, "id": {"type": "string"}},
    }


def _kind(kind: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **properties},
    }


# SPEC's stream: deltas and tool calls, then exactly one `end` or `error`.
CHAT_EVENT = {
    "oneOf": [
        _kind("delta", ["text"], text={"type": "string"}),
        _kind(
            "tool_call",
            ["index", "id", "name", "arguments"],
            index={"type": "integer"},
            id={"type": "string"},
            name={"type": "string"},
            arguments={"type": "string"},
        ),
        _kind(
            "end",
            ["id", "route", "usage", "cost_usd", "decisions", "finish_reason"],
            usage=_ref("UsageOut"),
            cost_usd={"type": "number", "minimum": 0},
            decisions={"type": "array", "items": _ref("DecisionOut")},
            finish_reason={"enum": ["stop", "length", "tool_calls", "content_filter", None]},
            truncated={"type": "boolean"},
        ),
        _kind("error", ["error"], error=_ref("ErrorDetail")),
    ]
}
# Anthropic's events each name their kind in `type`.
ANTHROPIC_EVENT = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}},
}


def json_and_sse(
    model: type[BaseModel], description: str, event: dict[str, Any] | None = None
) -> dict[int | str, Any]:
    """A 200 that is `model` as JSON, or (with `"stream": true`) server-sent events whose data
    follows `event` (OpenAI's chunks end with the non-JSON `[DONE]`: only a string there)."""
    return {
        200: {
            "model": model,
            "description": description,
            "content": {"text/event-stream": {"schema": _event(event)}},
        }
    }


def install(app: FastAPI) -> None:
    """Drop FastAPI's generated 422 (the gateway answers a bad body with 400, declared)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
