"""Per-provider concurrency limits (bulkheads): one slow provider cannot take every worker.

A provider with `max_concurrency: N` serves at most N calls at once, a stream holding its slot
until it ends. Further calls queue for up to `queue_timeout_s`, then fail as `rate_limited`
without reaching the provider, so a failover moves on to its next target.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app.chat import ChatRequest, Completion, StreamEvent
from app.errors import ErrorKind, ProviderError
from providers.base import ModelConfig, Provider


class Bulkhead(Provider):
    """Wraps a provider; everything but the two calls is the wrapped provider's."""

    def __init__(self, inner: Provider, limit: int, queue_timeout_s: float) -> None:
        super().__init__(inner.name, inner.config)
        self.inner = inner
        self.limit = limit
        self.queue_timeout_s = queue_timeout_s
        self._slots = asyncio.Semaphore(limit)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def _acquire(self, model: ModelConfig) -> None:
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ProviderError(
                ErrorKind.RATE_LIMITED,
                f"provider '{self.name}' is at its concurrency limit ({self.limit})",
                provider=self.name,
                model=model.model,
            ) from None

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        await self._acquire(model)
        try:
            return await self.inner.complete(model, request)
        finally:
            self._slots.release()

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        await self._acquire(model)
        events = self.inner.stream(model, request)
        try:
            async for event in events:
                yield event
        finally:
            self._slots.release()
            await events.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.inner.aclose()
