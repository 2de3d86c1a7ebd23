"""The state store's contract, on both backends: limits, reservations, breakers, degradation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from app.config import StateConfig
from app.state import MemoryStore, StateStore
from app.state_redis import DegradingStore, RedisStore
from tests.procs import REDIS_URL, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    prefix = request.getfixturevalue("redis_prefix")
    # A loaded CI machine may take longer than the 0.25 s default and fall back to memory.
    redis_store = RedisStore(
        StateConfig(backend="redis", url=REDIS_URL, prefix=prefix, timeout_s=2.0)
    )
    yield redis_store
    await redis_store.aclose()


async def test_reserve_stops_at_the_limit_and_says_when_it_resets(store: StateStore) -> None:
    results = [await store.reserve("rpm:a", 1, 3, 60) for _ in range(4)]
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[3].used == 3
    assert 55 < results[3].retry_after_s <= 60
    # Another key has its own count; an amount larger than what is left is refused whole.
    assert (await store.reserve("rpm:b", 1, 3, 60)).ok
    assert not (await store.reserve("tpm:a", 11, 10, 60)).ok
    assert (await store.reserve("tpm:a", 10, 10, 60)).ok


async def test_adjust_reconciles_within_the_window(store: StateStore) -> None:
    assert (await store.reserve("budget:x", 800, 1000, 60)).ok
    await store.adjust("budget:x", -700)  # really cost 100
    assert (await store.reserve("budget:x", 900, 1000, 60)).used == 1000
    await store.adjust("budget:x", -5000)  # never below zero
    assert (await store.reserve("budget:x", 1000, 1000, 60)).used == 1000
    await store.adjust("missing", 5)  # a window that ended is not recreated
    assert (await store.reserve("missing", 1, 1, 60)).ok


async def test_the_window_expires(store: StateStore) -> None:
    assert (await store.reserve("w", 1, 1, 0.2)).ok
    assert not (await store.reserve("w", 1, 1, 0.2)).ok
    await asyncio.sleep(0.3)
    assert (await store.reserve("w", 1, 1, 0.2)).ok


async def test_concurrent_reservations_never_pass_the_limit(store: StateStore) -> None:
    results = await asyncio.gather(*(store.reserve("c", 3, 50, 60) for _ in range(40)))
    assert sum(r.ok for r in results) == 16  # 16 * 3 = 48; a 17th would make 51


async def test_breaker_opens_probes_once_and_closes(store: StateStore) -> None:
    key, cooldown = "breaker:r:0:smart", 0.3
    assert await store.breaker_allow(key, cooldown)
    await store.breaker_failure(key, 2, cooldown)
    assert await store.breaker_state(key, cooldown) == "closed"
    await store.breaker_success(key)  # a success in between: failures count from zero
    await store.breaker_failure(key, 2, cooldown)
    await store.breaker_failure(key, 2, cooldown)
    assert await store.breaker_state(key, cooldown) == "open"
    assert not await store.breaker_allow(key, cooldown)
    await asyncio.sleep(cooldown + 0.05)
    assert await store.breaker_state(key, cooldown) == "half_open"
    allowed = await asyncio.gather(*(store.breaker_allow(key, cooldown) for _ in range(10)))
    assert sum(allowed) == 1  # one probe
    await store.breaker_failure(key, 2, cooldown)  # the probe failed: open again at once
    assert await store.breaker_state(key, cooldown) == "open"
    await asyncio.sleep(cooldown + 0.05)
    assert await store.breaker_allow(key, cooldown)
    await store.breaker_release(key)  # no verdict: another caller may probe
    assert await store.breaker_allow(key, cooldown)
    await store.breaker_success(key)
    assert await store.breaker_state(key, cooldown) == "closed"
    assert await store.breaker_allow(key, cooldown)


async def test_two_redis_clients_share_one_breaker_and_one_probe(redis_prefix: str) -> None:
    config = StateConfig(backend="redis", url=REDIS_URL, prefix=redis_prefix)
    a, b = RedisStore(config), RedisStore(config)
    try:
        key, cooldown = "breaker:shared", 0.3
        await a.breaker_failure(key, 1, cooldown)
        assert not await b.breaker_allow(key, cooldown)  # opened through a, open for b
        await asyncio.sleep(cooldown + 0.05)
        allowed = await asyncio.gather(
            *(s.breaker_allow(key, cooldown) for s in (a, b) for _ in range(5))
        )
        assert sum(allowed) == 1
        await b.breaker_success(key)
        assert await a.breaker_state(key, cooldown) == "closed"
    finally:
        await a.aclose()
        await b.aclose()


async def test_unreachable_redis_degrades_to_memory_fast_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = StateConfig(backend="redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    store = DegradingStore(RedisStore(dead), MemoryStore(), retry_s=60)
    caplog.set_level(logging.WARNING, logger="llm_router.state")
    started = time.monotonic()
    results = [await store.reserve("rpm:k", 1, 3, 60) for _ in range(5)]
    assert time.monotonic() - started < 2  # never hangs on it
    assert [r.ok for r in results] == [True, True, True, False, False]  # limits still hold
    assert store.degraded and store.backend == "memory (redis unreachable)"
    assert await store.breaker_allow("breaker:x", 1)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    await store.aclose()


async def test_degraded_store_returns_to_redis_when_it_answers(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    config = StateConfig(backend="redis", url=REDIS_URL, prefix=redis_prefix)
    store = DegradingStore(RedisStore(config), MemoryStore(), retry_s=5, clock=clock)
    store._down_until = clock.now + 5  # as after a failure
    store._degraded = True
    assert (await store.reserve("k", 1, 1, 60)).ok  # memory
    clock.now += 6
    caplog.set_level(logging.WARNING, logger="llm_router.state")
    assert (await store.reserve("k", 1, 1, 60)).ok  # redis: a count of its own
    assert not store.degraded
    assert any("answers again" in r.getMessage() for r in caplog.records)
    await store.aclose()
