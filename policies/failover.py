"""failover: try the chain in order; retry a target where it is worth it; move on when it is not.

What each upstream fault gets (every retry through tenacity, within `retries` per target):
- rate limited (429): wait as the upstream says (Retry-After, up to `max_retry_after_s`) or back
  off exponentially with jitter (`backoff`), and retry the same target; then move on. Told to
  wait longer than the cap, it moves on at once: it never hammers a failing upstream.
- server error (5xx, a connection reset before any header): retry the same target the same
  way; then move on.
- timeout (no answer, no first token): move straight on; a silent upstream is not asked twice.
- context length exceeded: no retry; move on to the next target whose declared
  `context_window` is larger (or unknown); none left: the provider's 400 goes back.
- bad request, content filtered: the caller's fault; no retry, no failover, the provider's reason
  goes back as a 400.
- anything else (authentication, unknown model): move on.

A stream fails over until its first event has reached the caller; after that, a failure (a cut, a
stall, an error event) is continued from the text delivered on the next target whose alias
`supports_prefill` (policies/continuation.py), or ends the stream with an error.
`first_token_timeout_s` and `idle_timeout_s` bound the wait for the first token and the silence
between chunks for every target below. `deadline_s` bounds the whole policy (attempts and waits)
within the request's own deadline. With `circuit_breaker`, each target has a breaker (kept in the
state store, `app/state.py`, so shared by every route that names the target and by replicas): a
target that keeps failing is skipped without a call until a probe after the cooldown finds it
back.

Every attempt is recorded on the call (target, error kind, status, latency) and in the policy's
decision, with the targets skipped and the waits between retries.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.chat import Completion, StreamEvent
from app.errors import ErrorKind, ProviderError
from app.routing import Call, Node, StreamLimits, Target
from app.state import BreakerState, MemoryStore, StateStore
from policies.base import Builder, Loc, NodeSpec, Policy, PolicyConfig
from policies.buffered import buffered
from policies.continuation import Chain, prepend, spliced
from policies.hedge import Hedging, open_hedged

T = TypeVar("T")

# Failures that say nothing about a target's health: its breaker is neither opened nor closed.
_NOT_THE_TARGETS_FAULT = frozenset({ErrorKind.CONTEXT_LENGTH, ErrorKind.BUDGET_EXCEEDED})


# Less time than this left: no attempt is started. asyncio may fire a timer up to its clock
# resolution early, so the attempt the deadline cut can end with a sliver of time "left".
MIN_ATTEMPT_S = 0.005


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
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    deadline_s: float | None = Field(default=None, gt=0)
    # Streams: at the first-token deadline, start the next target alongside (policies/hedge.py).
    hedge: bool = False
    # Streams: hold every event until the answer is whole, so a failure restarts cleanly on the
    # next target (policies/buffered.py).
    buffer: bool = False

    @model_validator(mode="after")
    def _hedge_needs_a_deadline(self) -> FailoverConfig:
        if self.hedge and self.first_token_timeout_s is None:
            raise ValueError("hedge needs first_token_timeout_s: the deadline that starts a hedge")
        if self.hedge and self.buffer:
            raise ValueError(
                "hedge and buffer exclude each other: a buffered stream has no first token"
            )
        return self

    @field_validator("retry_on")
    @classmethod
    def _retryable_only(cls, kinds: list[ErrorKind]) -> list[ErrorKind]:
        for kind in kinds:
            if kind.client_fault:
                raise ValueError(f"{kind.value} is the caller's fault and is never retried")
            if not kind.retryable:
                known = ", ".join(k.value for k in ErrorKind if k.retryable)
                raise ValueError(f"{kind.value} is never retried on the same target ({known} are)")
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
        # One breaker per target, whatever route names it, the same on every replica; a child
        # that is a subtree (a nested policy, a route) has one of its own, keyed by its place.
        self.breakers: dict[int, Breaker] = (
            {
                i: Breaker(config.circuit_breaker, store, f"breaker:{_guarded(child)}")
                for i, child in enumerate(chain)
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
        out: dict[str, Any] = {
            "label": "failover",
            "path": self.path,
            "policy": "failover",
            "retries": self.config.retries,
            "breakers": {self.chain[i].label: b.state for i, b in self.breakers.items()},
        }
        out["children"] = [child.describe() for child in self.chain]
        return out

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
            if exc.kind is ErrorKind.TIMEOUT or exc.kind not in self.config.retry_on:
                return False  # a silent upstream is not asked twice
            # Told to wait longer than we will: try elsewhere.
            return exc.retry_after is None or exc.retry_after <= self.config.max_retry_after_s

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
            return min(backoff(state), self.config.backoff.max_s)

        return wait

    def _retrying(self, call: Call, child: Node, waits: list[dict[str, Any]]) -> AsyncRetrying:
        def past_deadline(state: RetryCallState) -> bool:
            remaining = call.remaining_s()
            return remaining is not None and state.upcoming_sleep >= remaining

        def note_wait(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            told = isinstance(exc, ProviderError) and exc.retry_after is not None
            waits.append(
                {
                    "target": child.label,
                    "after_attempt": state.attempt_number,
                    "wait_ms": round(state.upcoming_sleep * 1000, 1),
                    "reason": "retry_after" if told else "backoff",
                }
            )

        return AsyncRetrying(
            stop=stop_after_attempt(self.config.retries + 1) | past_deadline,
            wait=self._wait(),
            retry=retry_if_exception(self._should_retry(call)),
            before_sleep=note_wait,
            reraise=True,
        )

    async def _with_retries(
        self,
        call: Call,
        child: Node,
        waits: list[dict[str, Any]],
        attempt_once: Callable[[Node], Awaitable[T]],
    ) -> T:
        async def attempt() -> T:  # a coroutine function, which tenacity then awaits
            return await attempt_once(child)

        retrying = self._retrying(call, child, waits)
        try:
            # Called, not iterated: `async for` keeps the call state on the retrier, which
            # refers back to it.
            return await retrying(attempt)
        finally:
            # The retrier keeps its pending actions, its own bound methods, in its iteration
            # state: a reference cycle per request, left for a full collection (20-60 ms under
            # load, bench/run.py's "GC > 50 ms"). Reset, it is freed as soon as it goes.
            retrying.iter_state.reset()

    # -- circuit breakers ------------------------------------------------------------------

    async def _allowed(self, index: int) -> bool:
        breaker = self.breakers.get(index)
        return breaker is None or await breaker.allow()

    async def _verdict(self, index: int, error: ProviderError | None) -> None:
        """Tell the child's breaker how its turn went. The caller's own faults say nothing
        about the target's health."""
        breaker = self.breakers.get(index)
        if breaker is None:
            return
        if error is None:
            await breaker.success()
        elif error.kind.client_fault or error.kind in _NOT_THE_TARGETS_FAULT:
            await breaker.release()
        else:
            await breaker.failure()

    # -- the chain -------------------------------------------------------------------------

    def _too_small(self, child: Node, too_small: int | None) -> bool:
        if too_small is None or not isinstance(child, Target):
            return False
        window = child.model.context_window
        return window is not None and window <= too_small

    def _narrow(self, call: Call) -> None:
        """Apply this policy's deadline and stream limits to the call, for the chain below."""
        if self.config.deadline_s is not None:
            mine = time.monotonic() + self.config.deadline_s
            call.deadline = mine if call.deadline is None else min(call.deadline, mine)
        limits = call.stream_limits
        call.stream_limits = StreamLimits(
            first_token_s=self.config.first_token_timeout_s or limits.first_token_s,
            idle_s=self.config.idle_timeout_s or limits.idle_s,
        )

    async def _run(self, call: Call, attempt_once: Callable[[Node], Awaitable[T]]) -> tuple[int, T]:
        first_attempt = len(call.attempts)
        skipped: list[dict[str, str]] = []
        waits: list[dict[str, Any]] = []
        last: ProviderError | None = None
        too_small: int | None = None  # the largest context window found too small
        saved = call.deadline, call.stream_limits
        self._narrow(call)
        try:
            for index, child in enumerate(self.chain):
                remaining = call.remaining_s()
                if remaining is not None and remaining < MIN_ATTEMPT_S:
                    skipped.append({"target": child.label, "skipped": "deadline"})
                    last = self._deadline_passed()
                    continue
                if self._too_small(child, too_small):
                    skipped.append({"target": child.label, "skipped": "context_window_too_small"})
                    continue
                if not await self._allowed(index):
                    skipped.append({"target": child.label, "skipped": "circuit_open"})
                    continue
                try:
                    if self.config.retries == 0:
                        # Nothing to retry: one attempt, without building a retrier (tenacity's
                        # costs ~10 % of a classify -> failover request, bench/instructions.py).
                        result = await attempt_once(child)
                    else:
                        result = await self._with_retries(call, child, waits, attempt_once)
                except ProviderError as error:
                    last = error
                    await self._verdict(index, error)
                    if call.output_started or error.kind.client_fault:
                        self._record(call, "failed", first_attempt, skipped, waits)
                        raise
                    if error.kind is ErrorKind.CONTEXT_LENGTH and isinstance(child, Target):
                        window = child.model.context_window
                        if window is not None:
                            too_small = max(window, too_small or 0)
                    continue
                await self._verdict(index, None)
                self._record(call, child.label, first_attempt, skipped, waits)
                return index, result
        finally:
            call.deadline, call.stream_limits = saved
        self._record(call, "exhausted", first_attempt, skipped, waits)
        raise self._exhausted(last, skipped)

    def _deadline_passed(self) -> ProviderError:
        if self.config.deadline_s is not None:
            return ProviderError(
                ErrorKind.TIMEOUT, f"the failover deadline of {self.config.deadline_s:g}s passed"
            )
        return ProviderError(ErrorKind.TIMEOUT, "the request deadline passed")

    def _exhausted(
        self, last: ProviderError | None, skipped: list[dict[str, str]]
    ) -> ProviderError:
        if last is None:
            names = ", ".join(s["target"] for s in skipped)
            return ProviderError(
                ErrorKind.SERVER_ERROR, f"no target is available (circuit open: {names})"
            )
        if last.kind is ErrorKind.CONTEXT_LENGTH:
            # The provider's own reason, for the caller to act on.
            message = f"{last.message} (no target in the chain has a larger context window)"
        else:
            message = f"every target failed; the last: {last.message}"
        return ProviderError(
            last.kind,
            message,
            status=last.status,
            retry_after=last.retry_after,
            provider=last.provider,
            model=last.model,
        )

    def _record(
        self,
        call: Call,
        outcome: str,
        first_attempt: int,
        skipped: list[dict[str, str]],
        waits: list[dict[str, Any]],
    ) -> None:
        attempts: list[Any] = [*call.attempts[first_attempt:], *skipped]
        detail: dict[str, Any] = {"attempts": attempts}
        if waits:
            detail["waits"] = waits
            detail["waited_ms"] = round(sum(w["wait_ms"] for w in waits), 1)
        call.decide("failover", self.path, outcome, **detail)

    async def _open_hedged(self, call: Call) -> tuple[int, AsyncIterator[StreamEvent], StreamEvent]:
        """Open the stream racing a late first token against the next target (policies/hedge.py)."""
        assert self.config.first_token_timeout_s is not None  # checked at load
        first_attempt = len(call.attempts)
        hedging = Hedging(
            self.chain, self.path, self.config.first_token_timeout_s, self._allowed, self._verdict
        )
        try:
            index, events, first = await open_hedged(hedging, call)
        except ProviderError as error:
            self._record(call, "exhausted", first_attempt, hedging.skipped, [])
            if hedging.hedges:
                call.decide("hedge", f"{self.path}.hedge", "failed", hedges=hedging.hedges)
            if error.kind.client_fault:
                raise
            raise self._exhausted(error, hedging.skipped) from None
        winner = self.chain[index]
        if isinstance(winner, Target):
            call.serving = winner
        self._record(call, winner.label, first_attempt, hedging.skipped, [])
        if hedging.hedges:
            call.decide("hedge", f"{self.path}.hedge", winner.label, hedges=hedging.hedges)
        return index, events, first

    # -- the node interface -----------------------------------------------------------------

    async def complete(self, call: Call) -> Completion:
        _index, completion = await self._run(call, lambda child: child.complete(call))
        return completion

    async def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        # Fail over until the first event arrives; after that the stream is committed: it is
        # continued elsewhere or reaches the caller as an error (never as a normal end).
        async def open_stream(child: Node) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
            events = child.stream(call)
            try:
                first = await anext(events)
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise
            return events, first

        saved = call.deadline, call.stream_limits
        self._narrow(call)  # the continuation below is bound by this policy's limits too
        try:
            if self.config.buffer:
                _index, held = await self._run(call, lambda child: buffered(child, call))
                for event in held:
                    yield event
                return
            if self.config.hedge:
                index, events, first = await self._open_hedged(call)
            else:
                index, (events, first) = await self._run(call, open_stream)
            # After the first event a failure is mid-stream: continued on a target that
            # supports prefill when there is one (policies/continuation.py), else an error.
            chain = Chain(self.chain, self.path, self._allowed, self._verdict)
            async for event in spliced(chain, call, index, prepend(first, events)):
                yield event
        finally:
            call.deadline, call.stream_limits = saved


def _normalize(value: Any) -> Any:
    return {"chain": value} if isinstance(value, list) else value


def _guarded(child: Node) -> str:
    return f"target:{child.name}" if isinstance(child, Target) else f"node:{child.path}"


def _build(config: FailoverConfig, builder: Builder, loc: Loc) -> Node:
    chain = [builder.node(spec, (*loc, "chain", i)) for i, spec in enumerate(config.chain)]
    return Failover(config, chain, ".".join(map(str, loc)), builder.state)


POLICY = Policy(key="failover", config=FailoverConfig, build=_build, normalize=_normalize)
