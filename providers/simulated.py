"""A provider with no network: deterministic answers, configurable latency and faults.

It is what `llm-router serve` answers with when no key is set, and what load and chaos tests
drive. The same prompt always yields the same text; latency and errors follow the config.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.chat import (
    AssistantMessage,
    ChatRequest,
    Completion,
    FunctionCall,
    StreamEvent,
    StreamFinish,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from app.errors import ErrorKind, ProviderError
from providers.base import (
    ModelConfig,
    Provider,
    ProviderConfig,
    estimate_input_tokens,
    estimate_tokens,
)

_WORDS = [
    "rain",
    "falls",
    "softly",
    "on",
    "the",
    "quiet",
    "street",
    "while",
    "lanterns",
    "glow",
    "and",
    "distant",
    "bells",
    "answer",
    "every",
    "question",
    "with",
    "patience",
    "a",
    "river",
    "of",
    "light",
    "carries",
    "small",
    "boats",
    "toward",
    "morning",
    "the",
    "garden",
    "keeps",
    "its",
    "secrets",
    "under",
    "leaves",
    "of",
    "copper",
    "and",
    "green",
    "clouds",
    "gather",
    "slowly",
    "above",
    "hills",
    "where",
    "wind",
    "remembers",
    "old",
    "songs",
    "and",
    "stones",
    "hold",
    "the",
    "warmth",
    "of",
    "noon",
]


class Latency(BaseModel):
    """Milliseconds: a fixed `mean`, or normally spread with `stddev`, clamped to [min, max]."""

    model_config = ConfigDict(extra="forbid")

    mean: float = Field(default=0.0, ge=0)
    stddev: float = Field(default=0.0, ge=0)
    min: float = Field(default=0.0, ge=0)
    max: float | None = Field(default=None, ge=0)

    def sample(self, rng: random.Random) -> float:
        value = rng.gauss(self.mean, self.stddev) if self.stddev else self.mean
        value = max(self.min, value)
        return min(self.max, value) if self.max is not None else value


class SimulatedConfig(ProviderConfig):
    type: Literal["simulated"] = "simulated"
    latency_ms: float | Latency = 0.0
    # Time between streamed chunks.
    chunk_delay_ms: float = Field(default=0.0, ge=0)
    # A total probability, or one per error class: {rate_limited: 0.05, server_error: 0.02}.
    error_rate: float | dict[ErrorKind, float] = 0.0
    retry_after_s: float | None = Field(default=None, ge=0)  # sent with simulated 429s
    words: int = Field(default=24, ge=1, le=4096)  # answer length when max_tokens allows
    seed: int | None = None  # fixes the fault and latency draws (the text is always fixed)

    @model_validator(mode="after")
    def _check_rates(self) -> SimulatedConfig:
        rates = self.error_rate.values() if isinstance(self.error_rate, dict) else [self.error_rate]
        if any(r < 0 or r > 1 for r in rates) or sum(rates) > 1:
            raise ValueError("error rates must lie in [0, 1] and sum to at most 1")
        return self


class SimulatedProvider(Provider):
    config_model = SimulatedConfig
    config: SimulatedConfig

    def __init__(self, name: str, config: SimulatedConfig) -> None:
        super().__init__(name, config)
        self._rng = random.Random(config.seed)
        latency = config.latency_ms
        self._latency = latency if isinstance(latency, Latency) else Latency(mean=latency)
        rate = config.error_rate
        self._faults = rate if isinstance(rate, dict) else {ErrorKind.SERVER_ERROR: rate}

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        await self._before_answer(model)
        message, finish, usage = self._answer(model, request)
        return Completion(message=message, finish_reason=finish, usage=usage, model=model.model)

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        await self._before_answer(model)
        message, finish, usage = self._answer(model, request)
        delay = self.config.chunk_delay_ms / 1000
        if message.content:
            words = message.content.split(" ")
            for i, word in enumerate(words):
                if delay:
                    await asyncio.sleep(delay)
                yield TextDelta(text=word if i == 0 else " " + word)
        for index, call in enumerate(message.tool_calls):
            yield ToolCallDelta(index=index, tool_call=call)
        yield StreamFinish(finish_reason=finish, usage=usage, model=model.model)

    async def _before_answer(self, model: ModelConfig) -> None:
        latency_s = self._latency.sample(self._rng) / 1000
        if latency_s > model.timeout_s:
            await asyncio.sleep(model.timeout_s)
            raise ProviderError(
                ErrorKind.TIMEOUT, "the simulated provider timed out", provider=self.name
            )
        if latency_s:
            await asyncio.sleep(latency_s)
        draw = self._rng.random()
        for kind, rate in self._faults.items():
            if draw < rate:
                raise ProviderError(
                    kind,
                    f"simulated {kind.value}",
                    status=_STATUS.get(kind),
                    retry_after=self.config.retry_after_s
                    if kind is ErrorKind.RATE_LIMITED
                    else None,
                    provider=self.name,
                    model=model.model,
                )
            draw -= rate

    def _answer(
        self, model: ModelConfig, request: ChatRequest
    ) -> tuple[AssistantMessage, Literal["stop", "length", "tool_calls"], Usage]:
        prompt = "\n".join(m.content or "" for m in request.messages)
        digest = hashlib.sha256(f"{model.model}\n{prompt}".encode()).digest()
        input_tokens = estimate_input_tokens(request.messages, request.tools)

        tool = _chosen_tool(request)
        if tool is not None:
            arguments = json.dumps({"query": request.messages[-1].content or ""})
            call = ToolCall(
                id="call_" + digest[:8].hex(),
                function=FunctionCall(name=tool, arguments=arguments),
            )
            usage = Usage.of(input_tokens, estimate_tokens(tool + arguments))
            return AssistantMessage(content=None, tool_calls=[call]), "tool_calls", usage

        want = self.config.words
        words = [_WORDS[(digest[i % len(digest)] + i * 7) % len(_WORDS)] for i in range(want)]
        text = " ".join(words)
        finish: Literal["stop", "length"] = "stop"
        limit = request.max_tokens or model.max_tokens
        if limit is not None and estimate_tokens(text) > limit:
            text = text[: limit * 4].rstrip()
            finish = "length"
        usage = Usage.of(input_tokens, estimate_tokens(text))
        return AssistantMessage(content=text), finish, usage


_STATUS = {
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.SERVER_ERROR: 500,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.CONTEXT_LENGTH: 400,
    ErrorKind.CONTENT_FILTERED: 400,
    ErrorKind.NOT_FOUND: 404,
}


def _chosen_tool(request: ChatRequest) -> str | None:
    """The tool to call: the one required by `tool_choice`, or under "auto" one the prompt names."""
    choice = request.tool_choice
    last = request.messages[-1]
    if not request.tools or choice == "none" or last.role == "tool":
        return None
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name") or request.tools[0].function.name)
    if choice == "required":
        return request.tools[0].function.name
    text = (last.content or "").lower()
    for tool in request.tools:
        if tool.function.name.lower() in text:
            return tool.function.name
    return None
