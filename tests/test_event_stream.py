"""`EventStream` (routers/common.py): chunks at hand go out together, nothing waits unwritten,
and a caller who hangs up while the stream waits cancels it cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from routers.common import EventStream

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_on = fail_on

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.fail_on is not None and len(self.messages) == self.fail_on:
            await asyncio.sleep(0)
            raise OSError("write failed")

    def bodies(self) -> list[tuple[bytes, bool]]:
        return [
            (m["body"], m["more_body"]) for m in self.messages if m["type"] == "http.response.body"
        ]


def never_hangs_up() -> Any:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def _script(steps: list[Any], log: list[str]) -> AsyncIterator[bytes]:
    try:
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield step
    finally:
        log.append("closed")


async def test_chunks_at_hand_are_written_together_and_the_last_ends_the_body() -> None:
    log: list[str] = []
    send = Recorder()
    stream = EventStream(_script([b"a", b"b", b"c", 0.01, b"d", b"e"], log), {})
    await stream(SCOPE, never_hangs_up(), send)
    assert send.messages[0]["type"] == "http.response.start"
    assert dict(send.messages[0]["headers"])[b"content-type"].startswith(b"text/event-stream")
    # What was at hand before the wait went out before it; the rest with the body's end.
    assert send.bodies() == [(b"abc", True), (b"de", False)]
    assert log == ["closed"]


async def test_a_stream_that_never_waits_starts_no_listener() -> None:
    receive_calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal receive_calls
        receive_calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    send = Recorder()
    await EventStream(_script([b"a", b"b"], []), {})(SCOPE, receive, send)
    await asyncio.sleep(0)
    assert send.bodies() == [(b"ab", False)]
    assert receive_calls == 0


async def test_an_empty_stream_ends_the_body() -> None:
    send = Recorder()
    await EventStream(_script([], []), {})(SCOPE, never_hangs_up(), send)
    assert send.bodies() == [(b"", False)]


async def test_a_caller_hanging_up_mid_wait_cancels_the_stream_cleanly() -> None:
    log: list[str] = []
    hung_up = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await hung_up.wait()
        return {"type": "http.disconnect"}

    send = Recorder()
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, hung_up.set)
    started = loop.time()
    await EventStream(_script([b"a", 5.0, b"never"], log), {})(SCOPE, receive, send)
    assert loop.time() - started < 1
    assert send.bodies() == [(b"a", True)]  # written before the wait; no end after the hang-up
    assert log == ["closed"]
    assert task.cancelling() == 0  # the cancellation was the response's own, and is taken back


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    log: list[str] = []

    async def serve() -> None:
        await EventStream(_script([b"a", 5.0, b"never"], log), {})(
            SCOPE, never_hangs_up(), Recorder()
        )

    task = asyncio.ensure_future(serve())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["closed"]


async def test_a_write_failing_while_the_stream_waits_unwinds_the_stream() -> None:
    log: list[str] = []
    send = Recorder(fail_on=2)  # the first body message: written while the next chunk is awaited
    with pytest.raises(OSError):
        await EventStream(_script([b"a", 0.01, b"b"], log), {})(SCOPE, never_hangs_up(), send)
    assert log == ["closed"]  # not left suspended where it waited
