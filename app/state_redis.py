"""The Redis state backend, shared by replicas, and its degradation when Redis is unreachable.

Each operation is one Lua script, so a check and its write are atomic across replicas. Breaker
times come from Redis's own clock (`TIME`), so replicas whose clocks differ still agree on when a
cooldown ends. Only key hashes and counters are stored, never a caller's key.

`DegradingStore` keeps the gateway serving when Redis is not: short socket timeouts, and on a
connection error or timeout it answers from this process's memory for `retry_s` seconds before
trying Redis again, logging one warning per interval. While degraded, limits and budgets are
enforced per replica instead of across replicas, and breakers are per replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.config import StateConfig
from app.state import BreakerState, MemoryStore, Reserved

log = logging.getLogger("llm_router.state")

T = TypeVar("T")

_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if used + amount > limit then
  return {0, used, redis.call('PTTL', KEYS[1])}
end
used = redis.call('INCRBY', KEYS[1], amount)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {1, used, ttl}
"""

_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return value
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_ALLOW = (
    _NOW
    + """
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if not opened then return 1 end
if now - tonumber(opened) < tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
)

_FAILURE = (
    _NOW
    + """
local opened = redis.call('HGET', KEYS[1], 'opened_at')
local probing = opened and (now - tonumber(opened) >= tonumber(ARGV[2]))
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if probing or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'opened_at', now)
end
redis.call('DEL', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return failures
"""
)

_STATE = (
    _NOW
    + """
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if not opened then return 'closed' end
if now - tonumber(opened) < tonumber(ARGV[1]) then return 'open' end
return 'half_open'
"""
)

_KEEP_BREAKER_MS = 24 * 3600 * 1000  # a breaker's failures are forgotten a day after the last


class RedisStore:
    """State in Redis under `state.prefix`; fails fast (short timeouts, no client retries)."""

    backend = "redis"

    def __init__(self, config: StateConfig) -> None:
        self.prefix = config.prefix
        self.url = config.url
        self.client: Redis = Redis.from_url(
            config.url,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._reserve = self.client.register_script(_RESERVE)
        self._adjust = self.client.register_script(_ADJUST)
        self._allow = self.client.register_script(_ALLOW)
        self._failure = self.client.register_script(_FAILURE)
        self._state = self.client.register_script(_STATE)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _breaker_keys(self, key: str) -> list[str]:
        return [self._key(key), self._key(key) + ":probe"]

    async def reserve(self, key: str, amount: int, limit: int, window_s: float) -> Reserved:
        window_ms = max(1, int(window_s * 1000))
        ok, used, ttl = await self._reserve(keys=[self._key(key)], args=[amount, limit, window_ms])
        left_ms = ttl if ttl > 0 else window_ms
        return Reserved(bool(ok), int(used), left_ms / 1000)

    async def adjust(self, key: str, delta: int) -> None:
        if delta:
            await self._adjust(keys=[self._key(key)], args=[delta])

    async def breaker_allow(self, key: str, cooldown_s: float) -> bool:
        cooldown_ms = max(1, int(cooldown_s * 1000))
        return bool(await self._allow(keys=self._breaker_keys(key), args=[cooldown_ms]))

    async def breaker_success(self, key: str) -> None:
        await self.client.delete(*self._breaker_keys(key))

    async def breaker_failure(self, key: str, threshold: int, cooldown_s: float) -> None:
        cooldown_ms = max(1, int(cooldown_s * 1000))
        args = [threshold, cooldown_ms, max(_KEEP_BREAKER_MS, 2 * cooldown_ms)]
        await self._failure(keys=self._breaker_keys(key), args=args)

    async def breaker_release(self, key: str) -> None:
        await self.client.delete(self._breaker_keys(key)[1])

    async def breaker_state(self, key: str, cooldown_s: float) -> BreakerState:
        cooldown_ms = max(1, int(cooldown_s * 1000))
        state = await self._state(keys=self._breaker_keys(key), args=[cooldown_ms])
        return state  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self.client.aclose()


_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError)


class DegradingStore:
    """Redis while it answers; this process's memory (logged, retried) while it does not."""

    def __init__(
        self,
        primary: RedisStore,
        fallback: MemoryStore,
        *,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.retry_s = retry_s
        self.clock = clock
        self._down_until = 0.0
        self._degraded = False
        # An upper bound for one operation, should a socket timeout not cover a stall.
        self._op_timeout_s = 4 * primary.client.connection_pool.connection_kwargs.get(
            "socket_timeout", 0.5
        )

    @property
    def backend(self) -> str:
        return "memory (redis unreachable)" if self.degraded else "redis"

    @property
    def degraded(self) -> bool:
        return self._degraded

    async def _run(
        self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        if self.clock() < self._down_until:
            return await fallback()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                result = await primary()
        except _UNREACHABLE as exc:
            self._down_until = self.clock() + self.retry_s
            # Redis is not tried again for `retry_s`: this logs once per interval at most.
            log.warning(
                "state: redis at %s unreachable (%s); limits, budgets and breakers use "
                "this process's memory, retrying in %gs",
                _redacted(self.primary.url),
                type(exc).__name__,
                self.retry_s,
            )
            self._degraded = True
            return await fallback()
        if self._degraded:
            self._degraded = False
            log.warning("state: redis at %s answers again", _redacted(self.primary.url))
        return result

    async def reserve(self, key: str, amount: int, limit: int, window_s: float) -> Reserved:
        return await self._run(
            lambda: self.primary.reserve(key, amount, limit, window_s),
            lambda: self.fallback.reserve(key, amount, limit, window_s),
        )

    async def adjust(self, key: str, delta: int) -> None:
        await self._run(
            lambda: self.primary.adjust(key, delta), lambda: self.fallback.adjust(key, delta)
        )

    async def breaker_allow(self, key: str, cooldown_s: float) -> bool:
        return await self._run(
            lambda: self.primary.breaker_allow(key, cooldown_s),
            lambda: self.fallback.breaker_allow(key, cooldown_s),
        )

    async def breaker_success(self, key: str) -> None:
        await self._run(
            lambda: self.primary.breaker_success(key), lambda: self.fallback.breaker_success(key)
        )

    async def breaker_failure(self, key: str, threshold: int, cooldown_s: float) -> None:
        await self._run(
            lambda: self.primary.breaker_failure(key, threshold, cooldown_s),
            lambda: self.fallback.breaker_failure(key, threshold, cooldown_s),
        )

    async def breaker_release(self, key: str) -> None:
        await self._run(
            lambda: self.primary.breaker_release(key), lambda: self.fallback.breaker_release(key)
        )

    async def breaker_state(self, key: str, cooldown_s: float) -> BreakerState:
        return await self._run(
            lambda: self.primary.breaker_state(key, cooldown_s),
            lambda: self.fallback.breaker_state(key, cooldown_s),
        )

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.fallback.aclose()


def _redacted(url: str) -> str:
    """The Redis URL without its password, for log lines."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
