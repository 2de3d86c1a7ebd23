"""Taking a stream's next item when it is at hand (app/steps.py), and the openai adapter's timed
reads built on it: a timer only for a wait on the network, the same bounds as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.steps import WAITING, Resumed, Thrown, first_step
from providers import openai as adapter


async def _script(steps: list[Any], log: list[str]) -> AsyncIterator[Any]:
    try:
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield step
    finally:
        log.append("closed")


async def test_an_item_at_hand_comes_without_a_step_and_a_wait_resumes() -> None:
    events = _script(["a", 0.01, "b"], [])
    assert first_step(events) == ("a", None, None)
    item, step, pending = first_step(events)
    assert item is WAITING and step is not None
    assert await Resumed(step, pending) == "b"
    with pytest.raises(StopAsyncIteration):
        first_step(events)


async def test_thrown_unwinds_a_half_done_step() -> None:
    log: list[str] = []
    events = _script([0.01, "a"], log)
    item, step, _ = first_step(events)
    assert item is WAITING
    with pytest.raises(OSError):
        await Thrown(step, OSError("the write failed"))
    assert log == ["closed"]


def _armed_timers(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    armed: list[float | None] = []
    real_timeout, real_timeout_at = asyncio.timeout, asyncio.timeout_at

    def timeout(delay: float | None) -> Any:
        armed.append(delay)
        return real_timeout(delay)

    def timeout_at(when: float | None) -> Any:
        armed.append(when)
        return real_timeout_at(when)

    monkeypatch.setattr(adapter.asyncio, "timeout", timeout)
    monkeypatch.setattr(adapter.asyncio, "timeout_at", timeout_at)
    return armed


async def test_a_chunk_at_hand_after_the_finish_arms_no_timer(monkeypatch) -> None:
    armed = _armed_timers(monkeypatch)
    events = _script(["usage"], [])
    assert await adapter._next_chunk(events, 0.1) == "usage"
    assert armed == []
    assert await adapter._next_chunk(events, 0.1) is None  # the end, at hand too
    assert armed == []


async def test_a_chunk_late_after_the_finish_is_still_bounded(monkeypatch) -> None:
    armed = _armed_timers(monkeypatch)
    log: list[str] = []
    events = _script([5.0, "never"], log)
    started = asyncio.get_running_loop().time()
    assert await adapter._next_chunk(events, 0.05) is None
    assert asyncio.get_running_loop().time() - started < 1
    assert armed == [0.05]
    await events.aclose()
    assert log == ["closed"]


async def test_drain_reads_what_is_at_hand_to_the_end_without_a_timer(monkeypatch) -> None:
    armed = _armed_timers(monkeypatch)
    log: list[str] = []
    body = _script([b"0\r\n", b""], log)
    await adapter._drain(body)
    assert log == ["closed"]  # read to its end
    assert armed == []


async def test_drain_waits_for_the_end_within_its_bound(monkeypatch) -> None:
    log: list[str] = []
    body = _script([0.01, b"late", b""], log)
    await adapter._drain(body)
    assert log == ["closed"]  # a short wait: read to its end

    log.clear()
    monkeypatch.setattr(adapter, "DRAIN_S", 0.05)
    body = _script([b"x", 5.0, b"never"], log)
    started = asyncio.get_running_loop().time()
    await adapter._drain(body)
    assert asyncio.get_running_loop().time() - started < 1
    assert log == ["closed"]  # given up at the bound, its generator unwound
