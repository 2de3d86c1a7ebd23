"""Anthropic's Messages API request body, and its translation to and from the canonical chat.

`system` (a string or text blocks) becomes one system message; a user turn's `tool_result`
blocks become `tool` messages (ahead of its text, as Anthropic orders them); an assistant turn's
`tool_use` blocks become tool calls. `metadata.user_id` is the sticky key (`user`); any other
metadata keys are passed on for `match` policies. Fields that steer Anthropic-only features
(`thinking`, `top_k`, `output_config`) are accepted and reported in the decision trail as not
applied; fields the gateway has no use for (`service_tier`, `cache_control`, …) are ignored.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.chat import (
    ChatRequest,
    Completion,
    FinishReason,
    FunctionCall,
    FunctionSpec,
    Message,
    Tool,
    ToolCall,
    ToolChoice,
)
from app.errors import UpstreamError

# Blocks an earlier answer may carry that no other provider can use: dropped from the history.
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_KNOWN_BLOCKS = frozenset({"text", "tool_use", "tool_result"}) | _DROPPED_BLOCKS
_NOT_APPLIED = ("top_k", "thinking", "output_config")


class _Lenient(BaseModel):
    # Anthropic adds fields often (cache_control, citations, …): unknown ones are ignored.
    model_config = ConfigDict(extra="ignore")


class TextBlock(_Lenient):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None
    is_error: bool = False

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        return _check_blocks(value, frozenset({"text"}))

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(block.text for block in self.content)
        return self.content or ""


class DroppedBlock(_Lenient):
    type: Literal["thinking", "redacted_thinking"]


Block = TextBlock | ToolUseBlock | ToolResultBlock | DroppedBlock


def _check_blocks(value: Any, allowed: frozenset[str]) -> Any:
    """Name the unsupported block type plainly, rather than pydantic's union error."""
    if isinstance(value, list):
        for block in value:
            kind = block.get("type") if isinstance(block, dict) else None
            if isinstance(kind, str) and kind not in allowed:
                raise ValueError(f"content blocks of type '{kind}' are not supported")
    return value


class InputMessage(_Lenient):
    role: Literal["user", "assistant"]
    content: str | list[Block]

    @field_validator("content", mode="before")
    @classmethod
    def _known_blocks(cls, value: Any) -> Any:
        return _check_blocks(value, _KNOWN_BLOCKS)

    @model_validator(mode="after")
    def _blocks_in_their_turns(self) -> InputMessage:
        for block in self.content if isinstance(self.content, list) else ():
            if isinstance(block, ToolUseBlock) and self.role != "assistant":
                raise ValueError("tool_use blocks belong in assistant turns")
            if isinstance(block, ToolResultBlock) and self.role != "user":
                raise ValueError("tool_result blocks belong in user turns")
        return self


class ToolSpec(_Lenient):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: str | None = None

    @field_validator("type")
    @classmethod
    def _custom_only(cls, value: str | None) -> str | None:
        if value not in (None, "custom"):
            raise ValueError(f"server tools ('{value}') are not supported; only custom tools")
        return value


class ToolChoiceSpec(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoiceSpec:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs a name")
        return self

    def canonical(self) -> ToolChoice:
        if self.type == "tool":
            return {"type": "function", "function": {"name": self.name}}
        return {"auto": "auto", "any": "required", "none": "none"}[self.type]  # type: ignore[return-value]


class CountTokensRequest(_Lenient):
    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoiceSpec | None = None

    def canonical_messages(self) -> list[Message]:
        messages: list[Message] = []
        if self.system:
            messages.append(Message(role="system", content=_system_text(self.system)))
        for message in self.messages:
            messages.extend(_canonical_turn(message))
        return messages

    def canonical_tools(self) -> list[Tool] | None:
        if self.tools is None:
            return None
        return [
            Tool(
                function=FunctionSpec(
                    name=tool.name, description=tool.description, parameters=tool.input_schema
                )
            )
            for tool in self.tools
        ]


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None

    def canonical(self) -> ChatRequest:
        metadata = dict(self.metadata or {})
        user = metadata.pop("user_id", None)
        return ChatRequest(
            route=self.model,
            messages=self.canonical_messages(),
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=self.stop_sequences or None,
            tools=self.canonical_tools(),
            tool_choice=self.tool_choice.canonical() if self.tool_choice else None,
            stream=self.stream,
            user=str(user) if user is not None else None,
            metadata=metadata,
        )

    def not_applied(self) -> list[str]:
        """Notes for the decision trail: fields given that the gateway does not apply."""
        given = [name for name in _NOT_APPLIED if getattr(self, name) is not None]
        return [f"{name} is not applied by llm-router" for name in given]


def _system_text(system: str | list[TextBlock]) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(block.text for block in system)


def _canonical_turn(message: InputMessage) -> list[Message]:
    """One Anthropic turn as canonical messages: tool results first, then the turn itself."""
    if isinstance(message.content, str):
        return [Message(role=message.role, content=message.content)]
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(
                ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments))
            )
        elif isinstance(block, ToolResultBlock):
            results.append(
                Message(role="tool", tool_call_id=block.tool_use_id, content=block.text())
            )
    text = "".join(texts) if texts else None
    if message.role == "assistant":
        if text is None and not calls:
            return []  # only dropped (thinking) blocks
        return [Message(role="assistant", content=text, tool_calls=calls or None)]
    if text is not None:
        results.append(Message(role="user", content=text))
    return results


# ---- the answer ------------------------------------------------------------------------------

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def tool_input(call: ToolCall) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's `input` must be."""
    try:
        value = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(
            f"the model's arguments for tool '{call.function.name}' are not a JSON object",
            code="invalid_tool_arguments",
        )
    return value


def content_blocks(completion: Completion) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if completion.message.content:
        blocks.append({"type": "text", "text": completion.message.content})
    for call in completion.message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": tool_input(call),
            }
        )
    return blocks
