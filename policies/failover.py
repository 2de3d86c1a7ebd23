"""failover: try the chain in order; retry a target where it is worth it; move on when it is not.

- rate limited: wait as the upstream says (Retry-After, up to `max_retry_after_s`) or back off
  exponentially with jitter, and retry the same target up to `retries` times; then move on.
- server error: retry the same target the same way; then move on.
- timeout: move straight on (a silent upstream is not asked twice).
- context length exceeded: move on to a target with a larger declared context window.
- bad request, content filtered: the caller's fault; no retry and no failover.
- anything else (authentication, unknown model): move on.
A stream fails over only until its first delta has reached the caller. A circuit breaker per
target (when configured) skips a target that keeps failing until its cooldown has passed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.chat import Completion, StreamEvent
from app.errors import ErrorKind, ProviderError
from app.routing import Call, Node, Target
from app.state import BreakerState, MemoryStore, StateStore
from policies.base import Builder, Loc, NodeSpec, Policy, PolicyConfig

T = TypeVar("T")


class Backoff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial_s: float = Field(default=0.25, ge=0)
    max_s: float = Field(default=8.0, ge=0)


class BreakerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class FailoverConfig(PolicyConfig):
    chain: list[NodeSpec] = Field(min_length=1)
    retries: int = Field(default=0, ge=0, le=10)
    retry_on: list[ErrorKind] = Field(
        default_factory=lambda: [ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR]
    )
    backoff: Backoff = Field(default_factory=Backoff)
    max_retry_after_s: float = Field(default=30.0, ge=0)
    circuit_breaker: BreakerConfig | None = None

    @field_validator("retry_on")
    @classmethod
    def _retryable_only(cls, kinds: list[ErrorKind]) -> list[ErrorKind]:
        for kind in kinds:
            if kind.client_fault:
                raise ValueError(f"{kind.value} is the caller's fault and is never retried")
        return kinds


class Breaker:
    """closed → open after N consecutive failures → half-open after the cooldown → closed.

    Its state lives in a state store (`app/state.py`): this process's memory by default, or
    Redis shared by replicas, so that a breaker opened through one replica is open for all and
    only one caller, in one replica, sends the half-open probe. `state` is the last one seen.
    """

    def __init__(
        self, config: BreakerConfig, store: StateStore | None = None, key: str = "breaker"
    ) -> None:
        self.config = config
        self.store: StateStore = store if store is not None else MemoryStore()
        self.key = key
        self.state: BreakerState = "closed"

    async def allow(self) -> bool:
        allowed = await self.store.breaker_allow(self.key, self.config.cooldown_s)
        if not allowed:
            self.state = "open"
        return allowed

    async def success(self) -> None:
        await self.store.breaker_success(self.key)
        self.state = "closed"

    async def failure(self) -> None:
        await self.store.breaker_failure(self.key, self.config.failures, self.config.cooldown_s)
        self.state = await self.store.breaker_state(self.key, self.config.cooldown_s)

    async def release(self) -> None:
        """A probe ended with no verdict on the target: let another caller probe."""
        await self.store.breaker_release(self.key)


class Failover(Node):
    def __init__(
        self,
        config: FailoverConfig,
        chain: list[Node],
        path: str,
        store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.chain = chain
        self.path = path
        store = store if store is not None else MemoryStore()
        self.breakers: dict[int, Breaker] = (
            {
                # Keyed by where it is declared and what it guards: the same on every replica.
                i: Breaker(config.circuit_breaker, store, f"breaker:{path}:{i}:{chain[i].label}")
                for i in range(len(chain))
            }
            if config.circuit_breaker
            else {}
        )

    @property
    def label(self) -> str:
        return "failover"

    def children(self) -> list[Node]:
        return list(self.chain)

    def describe(self) -> dict[str, Any]:
        return {
            "label": "failover",
            "path": self.path,
            "policy": "failover",
            "retries": self.config.retries,
            "breakers": {self.chain[i].label: b.state for i, b in self.breakers.items()},
            "children": [child.describe() for child in self.chain],
        }

    def span_attributes(self, decision: Any) -> dict[str, Any]:
        """What this node's span carries besides its decision (see app/hops.py)."""
        return {
            "resilience.max_retries": self.config.retries,
            "resilience.chain_length": len(self.chain),
        }

    # -- retry machinery -------------------------------------------------------------------

    def _should_retry(self, call: Call) -> Callable[[BaseException], bool]:
        def check(exc: BaseException) -> bool:
            if not isinstance(exc, ProviderError) or call.output_started:
                return False
            if exc.kind not in self.config.retry_on or exc.kind is ErrorKind.TIMEOUT:
                return False
            if exc.retry_after is not None and exc.retry_after > self.config.max_retry_after_s:
                return False  # told to wait longer than we will: try elsewhere
            remaining = call.remaining_s()
            return remaining is None or remaining > (exc.retry_after or 0)

        return check

    def _wait(self) -> Callable[[RetryCallState], float]:
        backoff = wait_exponential_jitter(
            initial=self.config.backoff.initial_s,
            max=self.config.backoff.max_s,
            jitter=self.config.backoff.initial_s,
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ProviderError) and exc.retry_after is not None:
                return min(exc.retry_after, self.config.max_retry_after_s)
            return backoff(state)

        return wait

    def _retrying(self, call: Call) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.config.retries + 1),
            wait=self._wait(),
            retry=retry_if_exception(self._should_retry(call)),
            reraise=True,
        )

    def _candidates(self, call: Call) -> list[int]:
        return list(range(len(self.chain)))

    async def _skip(self, index: int, call: Call, too_small: int | None) -> str | None:
        child = self.chain[index]
        if too_small is not None and isinstance(child, Target):
            window = child.model.context_window
            if window is not None and window <= too_small:
                return "context_window_too_small"
        breaker = self.breakers.get(index)
        if breaker is not None and not await breaker.allow():
            return "circuit_open"
        return None

    async def _run(self, call: Call, attempt_once: Callable[[Node], Awaitable[T]]) -> T:
        first_attempt = len(call.attempts)
        skipped: list[dict[str, str]] = []
        last: ProviderError | None = None
        too_small: int | None = None
        for index in self._candidates(call):
            child = self.chain[index]
            reason = await self._skip(index, call, too_small)
            if reason is not None:
                skipped.append({"target": child.label, "skipped": reason})
                continue
            breaker = self.breakers.get(index)
            try:
                async for attempt in self._retrying(call):
                    with attempt:
                        result = await attempt_once(child)
            except ProviderError as error:
                last = error
                if breaker is not None and error.kind.retryable:
                    await breaker.failure()
                elif breaker is not None:
                    await breaker.release()
                if call.output_started or error.kind.client_fault:
                    self._record(call, "failed", first_attempt, skipped)
                    raise
                if error.kind is ErrorKind.CONTEXT_LENGTH and isinstance(child, Target):
                    too_small = child.model.context_window or too_small
                continue
            if breaker is not None:
                await breaker.success()
            self._record(call, child.label, first_attempt, skipped)
            return result
        self._record(call, "exhausted", first_attempt, skipped)
        if last is None:
            raise ProviderError(ErrorKind.SERVER_ERROR, "every target's circuit breaker is open")
        raise ProviderError(
            last.kind,
            f"every target failed; the last: {last.message}",
            status=last.status,
            retry_after=last.retry_after,
            provider=last.provider,
            model=last.model,
        )

    def _record(
        self, call: Call, outcome: str, first_attempt: int, skipped: list[dict[str, str]]
    ) -> None:
        attempts: list[Any] = [*call.attempts[first_attempt:], *skipped]
        call.decide("failover", self.path, outcome, attempts=attempts)

    # -- the node interface -----------------------------------------------------------------

    async def complete(self, call: Call) -> Completion:
        return await self._run(call, lambda child: child.complete(call))

    async def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        # Fail over until the first event arrives; after that the stream is committed.
        async def open_stream(child: Node) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
            events = child.stream(call)
            try:
                first = await anext(events)
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise
            return events, first

        events, first = await self._run(call, open_stream)
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]


def _normalize(value: Any) -> Any:
    return {"chain": value} if isinstance(value, list) else value


def _build(config: FailoverConfig, builder: Builder, loc: Loc) -> Node:
    chain = [builder.node(spec, (*loc, "chain", i)) for i, spec in enumerate(config.chain)]
    return Failover(config, chain, ".".join(map(str, loc)), builder.state)


POLICY = Policy(key="failover", config=FailoverConfig, build=_build, normalize=_normalize)
