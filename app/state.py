"""Shared state: rate-limit counters, budget reservations and circuit-breaker state.

One `StateStore` interface, two backends: `MemoryStore` (the default: one process's own memory)
and `RedisStore` (`app/state_redis.py`: shared by every replica that names the same Redis).
Every operation is atomic within its backend: a check and its increment never interleave with
another request's, in this process or, with Redis, in any replica.

- `reserve(key, amount, limit, window_s)` adds `amount` to a counter that expires `window_s`
  after its first use, unless that would take it past `limit`. Rate limits reserve 1 request or
  the estimated tokens; budgets reserve the estimated cost, in nano-dollars.
- `adjust(key, delta)` reconciles a reservation with what was really used, in the same window.
- `breaker_*` keep a circuit breaker: consecutive failures, when it opened, and a probe lock so
  that only one caller (in one replica) sends the half-open probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from app.config import StateConfig

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class Reserved:
    ok: bool
    used: int  # the counter after the reservation, or as found when refused
    retry_after_s: float  # until the window resets


class StateStore(Protocol):
    """What limits, budgets and breakers ask of the state backend."""

    backend: str

    async def reserve(self, key: str, amount: int, limit: int, window_s: float) -> Reserved: ...

    async def adjust(self, key: str, delta: int) -> None: ...

    async def breaker_allow(self, key: str, cooldown_s: float) -> bool:
        """Closed: yes. Open: no. Half-open: yes to exactly one caller, the probe."""
        ...

    async def breaker_success(self, key: str) -> None:
        """Close the breaker and forget its failures."""
        ...

    async def breaker_failure(self, key: str, threshold: int, cooldown_s: float) -> None:
        """Count a failure; open at `threshold` in a row, or at once when the probe failed."""
        ...

    async def breaker_release(self, key: str) -> None:
        """The probe ended with no verdict on the target (e.g. the caller's bad request)."""
        ...

    async def breaker_state(self, key: str, cooldown_s: float) -> BreakerState: ...

    async def aclose(self) -> None: ...


@dataclass
class _Counter:
    value: int
    expires_at: float


@dataclass
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    probe_until: float = 0.0


class MemoryStore:
    """This process's memory. Atomic because every operation runs without an `await` inside."""

    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._counters: dict[str, _Counter] = {}
        self._breakers: dict[str, _Breaker] = {}

    def _live(self, key: str) -> _Counter | None:
        counter = self._counters.get(key)
        if counter is not None and counter.expires_at <= self.clock():
            del self._counters[key]
            return None
        return counter

    async def reserve(self, key: str, amount: int, limit: int, window_s: float) -> Reserved:
        now = self.clock()
        counter = self._live(key)
        used = counter.value if counter else 0
        left = counter.expires_at - now if counter else window_s
        if used + amount > limit:
            return Reserved(False, used, left)
        if counter is None:
            if len(self._counters) > 10_000:
                self._sweep()
            counter = self._counters[key] = _Counter(0, now + window_s)
        counter.value += amount
        return Reserved(True, counter.value, left)

    async def adjust(self, key: str, delta: int) -> None:
        counter = self._live(key)
        if counter is not None:
            counter.value = max(0, counter.value + delta)

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, c in self._counters.items() if c.expires_at <= now]:
            del self._counters[key]

    def _state(self, breaker: _Breaker | None, cooldown_s: float) -> BreakerState:
        if breaker is None or breaker.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - breaker.opened_at >= cooldown_s else "open"

    async def breaker_allow(self, key: str, cooldown_s: float) -> bool:
        breaker = self._breakers.get(key)
        state = self._state(breaker, cooldown_s)
        if state == "closed":
            return True
        if state == "open" or breaker is None:
            return False
        now = self.clock()
        if breaker.probe_until > now:
            return False  # another caller is probing
        breaker.probe_until = now + cooldown_s  # the probe's lease, should it never report
        return True

    async def breaker_success(self, key: str) -> None:
        self._breakers.pop(key, None)

    async def breaker_failure(self, key: str, threshold: int, cooldown_s: float) -> None:
        breaker = self._breakers.setdefault(key, _Breaker())
        probing = self._state(breaker, cooldown_s) == "half_open"
        breaker.failures += 1
        if probing or breaker.failures >= threshold:
            breaker.opened_at = self.clock()
        breaker.probe_until = 0.0

    async def breaker_release(self, key: str) -> None:
        breaker = self._breakers.get(key)
        if breaker is not None:
            breaker.probe_until = 0.0

    async def breaker_state(self, key: str, cooldown_s: float) -> BreakerState:
        return self._state(self._breakers.get(key), cooldown_s)

    async def aclose(self) -> None:
        return None


def open_store(config: StateConfig) -> StateStore:
    """The configured backend. A Redis store connects on first use, never here."""
    if config.backend == "redis":
        from app.state_redis import DegradingStore, RedisStore

        return DegradingStore(RedisStore(config), MemoryStore(), retry_s=config.retry_s)
    return MemoryStore()
