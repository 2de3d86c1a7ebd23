"""Circuit breakers: stop calling a target that keeps failing, and find out when it is back.

One breaker per target (a model alias, or a failover child that is a subtree). Its state machine:

    closed ──N consecutive failures──▶ open ──cooldown passes──▶ half-open
      ▲                                 ▲                           │ one probe call let through
      └──────────── success ────────────┼──────── probe fails ──────┘

A success in any state closes it. While open, the target costs nothing: it is skipped without a
call. After the cooldown one probe is let through at a time; a probe that never reports back
(the caller hung up) is given up after another cooldown, so a breaker cannot stay stuck.

`Breaker` is the pure state machine, with the clock passed in. `BreakerStore` is the small
interface the failover policy uses, keyed by target; `MemoryBreakerStore` keeps the breakers in
this process. A store shared by replicas (Redis) implements the same four calls.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Phase = Literal["closed", "open", "half_open"]


class BreakerConfig(BaseModel):
    """`circuit_breaker:` under a failover policy."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(default=5, ge=1)  # consecutive failed turns at a target that open it
    cooldown_s: float = Field(default=30.0, gt=0)  # open this long before a probe is let through


@dataclass
class Breaker:
    """One target's breaker. Every transition takes `now` (seconds, monotonic)."""

    failures: int = 0  # consecutive failures since the last success
    opened_at: float | None = None  # None: closed
    probe_until: float | None = None  # a half-open probe is out until then

    def phase(self, config: BreakerConfig, now: float) -> Phase:
        if self.opened_at is None:
            return "closed"
        if now - self.opened_at < config.cooldown_s:
            return "open"
        return "half_open"

    def allow(self, config: BreakerConfig, now: float) -> bool:
        """May a call go to the target now? In half-open, true for one probe at a time."""
        phase = self.phase(config, now)
        if phase == "closed":
            return True
        if phase == "open":
            return False
        if self.probe_until is not None and now < self.probe_until:
            return False
        self.probe_until = now + config.cooldown_s
        return True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probe_until = None

    def failure(self, config: BreakerConfig, now: float) -> None:
        self.failures += 1
        # A failed probe (or any failure while not closed) re-opens for a full cooldown.
        if self.opened_at is not None or self.failures >= config.failures:
            self.opened_at = now
        self.probe_until = None

    def release(self) -> None:
        """A probe ended without a verdict on the target (the caller's fault): let another."""
        self.probe_until = None

    def describe(self, config: BreakerConfig, now: float) -> dict[str, Any]:
        phase = self.phase(config, now)
        out: dict[str, Any] = {"state": phase, "failures": self.failures}
        if phase == "open" and self.opened_at is not None:
            out["retry_in_s"] = round(config.cooldown_s - (now - self.opened_at), 3)
        return out


class BreakerStore(ABC):
    """Where the breakers live, keyed by target. Async, so that a shared store can do I/O."""

    @abstractmethod
    async def allow(self, key: str, config: BreakerConfig) -> bool:
        """May a call go to `key` now (a half-open probe is claimed by the caller told yes)."""

    @abstractmethod
    async def success(self, key: str, config: BreakerConfig) -> None:
        """The target answered."""

    @abstractmethod
    async def failure(self, key: str, config: BreakerConfig) -> None:
        """The target failed (after the policy's retries)."""

    @abstractmethod
    async def release(self, key: str, config: BreakerConfig) -> None:
        """The call ended without a verdict on the target (e.g. the caller's bad request)."""

    @abstractmethod
    def describe(self) -> dict[str, dict[str, Any]]:
        """Every breaker's state as this process last knew it: {key: {state, failures, …}}."""


class MemoryBreakerStore(BreakerStore):
    """The breakers of one process (`state.backend: memory`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._breakers: dict[str, tuple[Breaker, BreakerConfig]] = {}

    def _get(self, key: str, config: BreakerConfig) -> Breaker:
        entry = self._breakers.get(key)
        breaker = entry[0] if entry else Breaker()
        self._breakers[key] = (breaker, config)  # the latest config, for describe()
        return breaker

    async def allow(self, key: str, config: BreakerConfig) -> bool:
        return self._get(key, config).allow(config, self._clock())

    async def success(self, key: str, config: BreakerConfig) -> None:
        self._get(key, config).success()

    async def failure(self, key: str, config: BreakerConfig) -> None:
        self._get(key, config).failure(config, self._clock())

    async def release(self, key: str, config: BreakerConfig) -> None:
        self._get(key, config).release()

    def describe(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {key: b.describe(config, now) for key, (b, config) in self._breakers.items()}
