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


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

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
