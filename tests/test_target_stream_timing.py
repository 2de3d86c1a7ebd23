"""A target's stream limits (app/routing.py `Target.stream`) when events come in bursts.

Events the provider already has in hand are taken without a timer; a wait for the next one is
still bounded by the first-token and idle limits, and a caller who leaves mid-wait still closes
the provider's stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.chat import ChatRequest, Completion, Message, StreamEvent, StreamFinish, TextDelta, Usage
from app.errors import ErrorKind, ProviderError
from app.routing import Call, Target
from providers.base import ModelConfig, Provider, ProviderConfig


class Scripted(Provider):
    """Yields its script: an event, or a number of seconds to wait before the next one."""

    config_model = ProviderConfig

    def __init__(self, script: list[Any]) -> None:
        super().__init__("scripted", ProviderConfig(type="scripted"))
        self.script = script
        self.closed = False

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        raise NotImplementedError

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        try:
            for step in self.script:
                if isinstance(step, int | float):
                    await asyncio.sleep(step)
                else:
                    yield step
        finally:
            self.closed = True


def _target(script: list[Any], **limits: float) -> tuple[Target, Scripted]:
    provider = Scripted(script)
    model = ModelConfig(provider="scripted", model="m", **limits)
    return Target("t", provider, model), provider


def _call() -> Call:
    return Call(ChatRequest(messages=[Message(role="user", content="hi")]))


def _finish() -> StreamFinish:
    return StreamFinish(usage=Usage.of(1, 2), model="m")


async def _collect(target: Target, call: Call) -> list[StreamEvent]:
    return [event async for event in target.stream(call)]


def test_a_burst_and_waits_within_the_limits_all_arrive() -> None:
    script = [0.02, TextDelta(text="a"), TextDelta(text="b"), 0.02, TextDelta(text="c"), _finish()]
    target, provider = _target(script, first_token_timeout_s=1, idle_timeout_s=1)
    call = _call()
    events = asyncio.run(_collect(target, call))
    assert [getattr(e, "text", None) for e in events] == ["a", "b", "c", None]
    assert call.answer is not None and call.answer.usage.output_tokens == 2
    assert provider.closed and call.attempts[0].ok


def test_a_stall_after_a_burst_is_a_timeout() -> None:
    script = [TextDelta(text="a"), TextDelta(text="b"), 5, TextDelta(text="late"), _finish()]
    target, provider = _target(script, idle_timeout_s=0.1)
    call = _call()
    seen: list[str] = []

    async def run() -> None:
        async for event in target.stream(call):
            seen.append(event.text)  # type: ignore[union-attr]

    with pytest.raises(ProviderError) as raised:
        asyncio.run(asyncio.wait_for(run(), 3))
    assert raised.value.kind is ErrorKind.TIMEOUT
    assert "stalled" in raised.value.message
    assert seen == ["a", "b"] and provider.closed
    assert call.attempts[0].ok is False and call.attempts[0].error == "timeout"


def test_no_first_token_in_time_is_a_timeout() -> None:
    target, provider = _target([5, TextDelta(text="late")], first_token_timeout_s=0.1)
    with pytest.raises(ProviderError) as raised:
        asyncio.run(asyncio.wait_for(_collect(target, _call()), 3))
    assert raised.value.kind is ErrorKind.TIMEOUT and "first token" in raised.value.message
    assert provider.closed


def test_a_caller_leaving_mid_wait_closes_the_stream() -> None:
    target, provider = _target([TextDelta(text="a"), 5, TextDelta(text="b")])

    async def run() -> None:
        task = asyncio.ensure_future(_collect(target, _call()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The task's cancellation was not taken for the target's own timer.
        assert task.cancelled()

    asyncio.run(run())
    assert provider.closed


def test_a_timeout_says_which_limit_it_was() -> None:
    """Worded only when it fires: the limit that bounded the wait, or the request's deadline."""
    target, _ = _target([5, TextDelta(text="late")], first_token_timeout_s=0.1)
    with pytest.raises(ProviderError) as raised:
        asyncio.run(asyncio.wait_for(_collect(target, _call()), 3))
    assert raised.value.message == "no first token within 0.1s"

    target, _ = _target([TextDelta(text="a"), 5, TextDelta(text="b")], idle_timeout_s=0.1)
    with pytest.raises(ProviderError) as raised:
        asyncio.run(asyncio.wait_for(_collect(target, _call()), 3))
    assert raised.value.message == "the stream stalled: no chunk within 0.1s"

    async def before_the_deadline() -> None:
        call = Call(
            ChatRequest(messages=[Message(role="user", content="hi")]),
            deadline=time.monotonic() + 0.1,
        )
        target, _ = _target([TextDelta(text="a"), 5, TextDelta(text="b")], idle_timeout_s=3)
        await _collect(target, call)

    with pytest.raises(ProviderError) as raised:
        asyncio.run(asyncio.wait_for(before_the_deadline(), 3))
    assert raised.value.message == "the stream stalled: no chunk before the request deadline"
