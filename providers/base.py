"""The interface every provider adapter implements, and the config shapes they share.

A `Provider` is one entry under `providers:` in router.yaml. It is built once at start (its SDK
client with it, pooled) and then answers `complete` and `stream` for any model alias that names
it. Adapters translate the canonical request (`app.chat`) into their SDK's call and map every
SDK exception into `ProviderError` (`app.errors`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.chat import ChatRequest, Completion, Message, StreamEvent

Instrumentation = Literal["openinference", "traceloop", "none"]


class ProviderConfig(BaseModel):
    """Fields every provider entry accepts. Each adapter subclasses it with its own."""

    model_config = ConfigDict(extra="forbid")

    type: str
    instrumentation: Instrumentation = "openinference"
    # A bulkhead: at most this many calls at once (streams included); others queue.
    max_concurrency: int | None = Field(default=None, ge=1)
    queue_timeout_s: float = Field(default=5.0, ge=0)  # queued longer: rate_limited


class ModelConfig(BaseModel):
    """A model alias (`models:` in router.yaml), also built on the fly for `provider/model-id`.

    Prices are USD per million tokens; when absent they come from the bundled price table.
    """

    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str
    input_price: float | None = Field(default=None, ge=0)
    output_price: float | None = Field(default=None, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    # Streams: the wait for the first token, and the longest silence between chunks (a stall);
    # unset, `timeout_s` bounds both. A failover policy may set its own for its chain.
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    context_window: int | None = Field(default=None, gt=0)
    supports_prefill: bool = False
    max_tokens: int | None = Field(default=None, gt=0)  # sent when the caller gives none
    deployment: str | None = None  # Azure OpenAI: the deployment name, when not `model`

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        price_in = self.input_price or 0.0
        price_out = self.output_price or 0.0
        return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


class Provider(ABC):
    """One configured provider. Subclasses set `config_model` and implement the two calls."""

    config_model: ClassVar[type[ProviderConfig]]

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config

    @property
    def type(self) -> str:
        return self.config.type

    @abstractmethod
    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        """One non-streaming call. Raises `ProviderError` on any upstream failure."""

    @abstractmethod
    def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield `TextDelta`/`ToolCallDelta` events, then exactly one `StreamFinish`.

        Raises `ProviderError` on failure, before or after the first delta.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release pooled connections."""


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate: about four characters a token, never zero for text."""
    if not text:
        return 0
    return max(1, math.ceil(len(text) / 4))


def estimate_input_tokens(messages: list[Message], tools: list[Any] | None = None) -> int:
    """Estimate of a prompt's tokens: content plus a small per-message framing overhead."""
    total = 3
    for message in messages:
        total += 4 + estimate_tokens(message.content or "")
        for call in message.tool_calls or ():
            total += estimate_tokens(call.function.name) + estimate_tokens(call.function.arguments)
    for tool in tools or ():
        total += estimate_tokens(str(tool))
    return total
