"""The span of one upstream call by a target; the SDK instrumentor's span nests under it.

`Target` (app/routing.py) puts each provider call through `attempt_span(call, target)`: `run`
for a completion, `events` for a stream. An untraced call (no tracer on it) goes straight through.
When no instrumentor covers the provider, the attempt span itself carries the OpenInference LLM
attributes (model name, token counts) so that the call still shows as a model event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode

from app.chat import Completion, StreamEvent, StreamFinish, Usage
from app.errors import ErrorKind, ProviderError
from app.honeyhive import EVENT_TYPE
from app.spans import (
    ATTEMPT,
    COST,
    HOP,
    INPUT_TOKENS,
    MODEL,
    OUTPUT_TOKENS,
    PROVIDER,
    PROVIDER_ERROR,
    PROVIDER_MODEL,
    PROVIDER_STATUS,
    PROVIDER_TYPE,
    SPAN_KIND,
    SUCCESS,
    TARGET,
    RouteTracer,
    attach,
    current,
    detach,
)

if TYPE_CHECKING:
    from app.routing import Call, Target


class AttemptSpan:
    """One upstream call by a target: the span the SDK instrumentor's span nests under."""

    def __init__(self, call: Call, target: Target, tracer: RouteTracer) -> None:
        self.target = target
        provider = target.provider
        self.instrumented = provider.type in tracer.instrumented_types
        attributes: dict[str, Any] = {
            SPAN_KIND: "CHAIN" if self.instrumented else "LLM",
            EVENT_TYPE: "chain" if self.instrumented else "model",
            TARGET: target.name,
            PROVIDER: provider.name,
            PROVIDER_TYPE: provider.type,
            PROVIDER_MODEL: target.model.model,
            ATTEMPT: 1 + sum(1 for a in call.attempts if a.target == target.name),
            HOP: len(call.attempts) + 1,
        }
        if not self.instrumented:
            attributes |= {"llm.model_name": target.model.model, "llm.provider": provider.type}
        self._tracer = tracer
        self._attributes = attributes
        self.span: Span = INVALID_SPAN  # started when the upstream call starts

    def _begin(self) -> None:
        name = f"attempt {self.target.name}"
        self.span = self._tracer.start_span(name, self._attributes)

    def _succeeded(self, usage: Usage, model: str) -> None:
        attributes: dict[str, Any] = {
            SUCCESS: True,
            COST: self.target.cost_usd(usage),
            INPUT_TOKENS: usage.input_tokens,
            OUTPUT_TOKENS: usage.output_tokens,
            MODEL: model or self.target.model.model,
        }
        if not self.instrumented:  # the OpenInference LLM shape, as an instrumentor would give
            attributes |= {
                "llm.model_name": model or self.target.model.model,
                "llm.token_count.prompt": usage.input_tokens,
                "llm.token_count.completion": usage.output_tokens,
                "llm.token_count.total": usage.total_tokens,
            }
        self.span.set_attributes(attributes)

    def _failed(self, exc: BaseException, since: float, timeout_s: float) -> None:
        if isinstance(exc, ProviderError):
            kind = exc.kind.value
            if exc.status is not None:
                self.span.set_attribute(PROVIDER_STATUS, exc.status)
            description = f"{kind}: {exc.message}"
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            # asyncio.timeout cancels us from outside: tell a timeout from a caller who left.
            timed_out = time.perf_counter() - since >= timeout_s * 0.98
            kind = "timeout" if timed_out else "cancelled"
            description = kind
        else:
            kind, description = "internal", type(exc).__name__
        self.span.set_attributes({SUCCESS: False, PROVIDER_ERROR: kind})
        self.span.set_status(Status(StatusCode.ERROR, description))

    async def run(self, call: Awaitable[Completion], timeout_s: float) -> Completion:
        self._begin()
        started = time.perf_counter()
        token = attach(self.span)
        try:
            try:
                completion = await call
            finally:
                detach(token)
        except BaseException as exc:
            self._failed(exc, started, timeout_s)
            raise
        else:
            self._succeeded(completion.usage, completion.model)
            return completion
        finally:
            self.span.end()

    async def events(
        self, events: AsyncIterator[StreamEvent], timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        self._begin()
        last = time.perf_counter()
        finished = False
        error: BaseException | None = None
        try:
            while True:
                token = attach(self.span)
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                finally:
                    detach(token)
                last = time.perf_counter()
                if isinstance(event, StreamFinish):
                    self._succeeded(event.usage, event.model)
                    if event.truncated:  # spent tokens, but never a complete answer
                        self._failed(_TRUNCATED, last, timeout_s)
                    finished = True
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                with current(self.span):
                    await events.aclose()  # type: ignore[attr-defined]
            finally:
                if error is not None and not (finished and isinstance(error, GeneratorExit)):
                    self._failed(error, last, timeout_s)
                self.span.end()


_TRUNCATED = ProviderError(ErrorKind.SERVER_ERROR, "the provider's stream ended before its finish")


class _Untraced:
    async def run(self, call: Awaitable[Completion], timeout_s: float) -> Completion:
        return await call

    def events(
        self, events: AsyncIterator[StreamEvent], timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        return events


_UNTRACED = _Untraced()


def attempt_span(call: Call, target: Target) -> AttemptSpan | _Untraced:
    tracer = call.tracer
    return _UNTRACED if tracer is None else AttemptSpan(call, target, tracer)
