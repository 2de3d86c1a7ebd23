"""The canonical chat data every layer speaks: HTTP dialects translate to it, providers from it.

These are plain pydantic models so that the HTTP layer can validate callers' bodies with them
and adapters can build provider requests from them without re-checking anything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class FunctionCall(BaseModel):
    name: str
    arguments: str = "{}"  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


def valid_unicode(value: Any) -> Any:
    """`value`, refused when any string in it is not valid Unicode: JSON can carry a lone
    surrogate (`"\\udc00"`), but no provider's wire, log or span can."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode (it holds a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            valid_unicode(key)
            valid_unicode(item)
    elif isinstance(value, list | tuple):
        for item in value:
            valid_unicode(item)
    return value


def _message_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of a message says what `_check_role_fields` enforces, one shape a role,
    so that the OpenAPI document describes exactly the messages the gateway accepts."""
    props = schema["properties"]
    text_parts = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        },
    }
    content = {"anyOf": [{"type": "string"}, text_parts]}
    nullable_content = {"anyOf": [*content["anyOf"], {"type": "null"}]}
    name = props["name"]
    no_calls = {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}
    shapes = [
        ({"enum": ["system", "user"]}, {"content": content, "tool_calls": no_calls}, ["content"]),
        (
            {"const": "assistant"},
            {"content": nullable_content, "tool_calls": props["tool_calls"]},
            [],
        ),
        (
            {"const": "tool"},
            {
                "content": nullable_content,
                "tool_call_id": {"type": "string", "minLength": 1},
                "tool_calls": no_calls,
            },
            ["tool_call_id"],
        ),
    ]
    schema.pop("properties")
    schema.pop("required", None)
    schema["oneOf"] = [
        {
            "type": "object",
            "properties": {"role": role, "name": name, **fields},
            "required": ["role", *required],
        }
        for role, fields, required in shapes
    ]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra=_message_schema)

    role: Role
    content: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _flatten_parts(cls, value: Any) -> Any:
        # OpenAI callers may send content as a list of parts; text parts are joined.
        if isinstance(value, list):
            texts = []
            for part in value:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ValueError("only text content parts are supported")
                texts.append(str(part.get("text", "")))
            return "".join(texts)
        return value

    @field_validator("content", "name", "tool_call_id", mode="after")
    @classmethod
    def _unicode(cls, value: str | None) -> str | None:
        return valid_unicode(value)

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role != "assistant" and self.tool_calls:
            raise ValueError("only assistant messages may carry tool_calls")
        if self.role in ("system", "user") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        return self


class FunctionSpec(BaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionSpec


# "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}}
ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]


class ChatRequest(BaseModel):
    """A chat request as the router sees it, whatever dialect it arrived in."""

    model_config = ConfigDict(extra="forbid")

    route: str = "default"
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    stream: bool = False
    user: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_cost_usd: float | None = Field(default=None, ge=0)
    dry_run: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("route", "stop", "user", "metadata", "tools", "tool_choice", mode="before")
    @classmethod
    def _unicode(cls, value: Any) -> Any:
        return valid_unicode(value)


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False  # true when the provider reported none and we counted

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int, *, estimated: bool = False) -> Usage:
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            estimated=estimated,
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage.of(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            estimated=self.estimated or other.estimated,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class Completion(BaseModel):
    """What a provider adapter returns for one non-streaming call."""

    message: AssistantMessage
    finish_reason: FinishReason = "stop"
    usage: Usage
    model: str  # the model id that actually answered, as the provider reports it
    notes: list[str] = Field(default_factory=list)  # e.g. parameters dropped as unsupported


# ---- streaming: what adapters yield ------------------------------------------------------


class TextDelta(BaseModel):
    type: Literal["delta"] = "delta"
    text: str


class ToolCallDelta(BaseModel):
    """One complete tool call. Adapters assemble a provider's argument fragments before yielding."""

    type: Literal["tool_call"] = "tool_call"
    index: int
    tool_call: ToolCall


class StreamFinish(BaseModel):
    """The last event of an adapter's stream; `truncated`: cut before the upstream's terminator."""

    type: Literal["finish"] = "finish"
    finish_reason: FinishReason = "stop"
    usage: Usage
    model: str
    truncated: bool = False
    notes: list[str] = Field(default_factory=list)


StreamEvent = TextDelta | ToolCallDelta | StreamFinish
