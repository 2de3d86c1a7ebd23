"""The failover policy's order, attempt accounting and backoff, as properties over any script.

The policy and its targets are the real ones; only the provider under them is scripted: each
call takes the next outcome (an answer or an error kind) from its target's script. A small
reference walk of the chain, written from the issue's rules, says which calls must be made.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.chat import (
    AssistantMessage,
    ChatRequest,
    Completion,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Usage,
)
from app.errors import ErrorKind, ProviderError
from app.routing import Call, Target
from policies.failover import Backoff, Failover, FailoverConfig
from providers.base import ModelConfig, Provider, ProviderConfig

CAP_S = 0.01  # max_retry_after_s in these tests
BACKOFF = Backoff(initial_s=0.002, max_s=0.006)


@dataclass(frozen=True)
class Outcome:
    kind: ErrorKind | None = None  # None: an answer
    retry_after: float | None = None


class ScriptedProvider(Provider):
    """Answers or fails each call as its script says; logs every call."""

    config_model = ProviderConfig

    def __init__(self, name: str, script: list[Outcome]) -> None:
        super().__init__(name, ProviderConfig(type="scripted"))
        self.script = deque(script)
        self.calls: list[tuple[float, Outcome]] = []

    def _next(self) -> Outcome:
        outcome = self.script.popleft() if self.script else Outcome()
        self.calls.append((time.monotonic(), outcome))
        if outcome.kind is not None:
            raise ProviderError(
                outcome.kind, f"scripted {outcome.kind.value}", retry_after=outcome.retry_after
            )
        return outcome

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        self._next()
        return Completion(
            message=AssistantMessage(content=self.name), usage=Usage.of(3, 1), model=model.model
        )

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self._next()
        yield TextDelta(text=self.name)
        yield StreamFinish(usage=Usage.of(3, 1), model=model.model)


outcomes = st.one_of(
    st.just(Outcome()),
    st.sampled_from(
        [
            ErrorKind.SERVER_ERROR,
            ErrorKind.TIMEOUT,
            ErrorKind.BAD_REQUEST,
            ErrorKind.CONTENT_FILTERED,
            ErrorKind.AUTHENTICATION,
            ErrorKind.CONTEXT_LENGTH,
        ]
    ).map(Outcome),
    st.sampled_from([None, 0.0, 0.003, 5.0]).map(
        lambda after: Outcome(ErrorKind.RATE_LIMITED, after)
    ),
)


def expected_calls(
    scripts: list[list[Outcome]], retries: int, retry_on: list[ErrorKind]
) -> tuple[list[tuple[int, Outcome]], int | None, ErrorKind | None]:
    """The issue's rules, walked by hand: (calls made, index that answered, final error)."""
    calls: list[tuple[int, Outcome]] = []
    last: ErrorKind | None = None
    for index, script in enumerate(scripts):
        pending = deque(script)
        for turn in range(retries + 1):
            outcome = pending.popleft() if pending else Outcome()
            calls.append((index, outcome))
            if outcome.kind is None:
                return calls, index, None
            last = outcome.kind
            if outcome.kind in (ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_FILTERED):
                return calls, None, outcome.kind  # the caller's fault: stop everything
            worth_retrying = (
                outcome.kind in retry_on
                and outcome.kind is not ErrorKind.TIMEOUT
                and (outcome.retry_after is None or outcome.retry_after <= CAP_S)
            )
            if not worth_retrying or turn == retries:
                break
    return calls, None, last


def build(scripts: list[list[Outcome]], **options: object) -> tuple[Failover, list[Target]]:
    targets = [
        Target(f"t{i}", ScriptedProvider(f"p{i}", script), ModelConfig(provider=f"p{i}", model="m"))
        for i, script in enumerate(scripts)
    ]
    defaults: dict[str, object] = {"backoff": BACKOFF, "max_retry_after_s": CAP_S}
    config = FailoverConfig.model_validate(
        {"chain": [t.name for t in targets], **defaults, **options}
    )
    return Failover(config, list(targets), "routes.test.failover"), targets


def ask(stream: bool = False) -> Call:
    return Call(ChatRequest(messages=[{"role": "user", "content": "hi"}], stream=stream))


async def run(policy: Failover, call: Call, stream: bool) -> str:
    if not stream:
        return (await policy.complete(call)).message.content or ""
    text = ""
    async for event in policy.stream(call):
        if isinstance(event, TextDelta):
            text += event.text
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scripts=st.lists(st.lists(outcomes, max_size=4), min_size=1, max_size=4),
    retries=st.integers(0, 3),
    retry_on=st.sampled_from(
        [
            [ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR],
            [ErrorKind.SERVER_ERROR],
            [ErrorKind.RATE_LIMITED, ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR],
        ]
    ),
    stream=st.booleans(),
)
def test_order_and_attempt_accounting(
    scripts: list[list[Outcome]], retries: int, retry_on: list[ErrorKind], stream: bool
) -> None:
    policy, targets = build(scripts, retries=retries, retry_on=retry_on)
    call = ask(stream)
    calls, answered, error = expected_calls(scripts, retries, retry_on)

    started = time.monotonic()
    try:
        text = asyncio.run(run(policy, call, stream))
    except ProviderError as raised:
        assert answered is None and raised.kind is error
    else:
        assert answered is not None and text == f"p{answered}"
        assert call.answer is not None and call.answer.target is targets[answered]
    elapsed = time.monotonic() - started

    # The calls made, in order, are exactly the rules' calls.
    made = sorted(
        (when, int(t.provider.name[1:]), outcome)
        for t in targets
        for when, outcome in t.provider.calls  # type: ignore[attr-defined]
    )
    assert [(i, o) for _, i, o in made] == calls
    # Every call is one recorded attempt, with its error kind.
    assert [(a.target, a.error) for a in call.attempts] == [
        (f"t{i}", o.kind.value if o.kind else None) for i, o in calls
    ]
    assert all(a.latency_ms >= 0 for a in call.attempts)
    (decision,) = call.decisions
    assert decision.detail["attempts"] == call.attempts
    # Each retry waited: Retry-After when told (at most the cap), else bounded backoff.
    waits = decision.detail.get("waits", [])
    retried = sum(1 for (i, _), (j, _) in itertools.pairwise(calls) if i == j)
    assert len(waits) == retried
    for wait in waits:
        assert 0 <= wait["wait_ms"] <= max(CAP_S, BACKOFF.max_s) * 1000
    assert elapsed >= sum(w["wait_ms"] for w in waits) / 1000


@pytest.mark.parametrize("retries", [1, 2, 3])
def test_backoff_doubles_and_is_bounded(retries: int) -> None:
    policy, targets = build(
        [[Outcome(ErrorKind.SERVER_ERROR)] * 4, []],
        retries=retries,
        backoff=Backoff(initial_s=0.01, max_s=0.03),
    )
    call = ask()
    asyncio.run(policy.complete(call))
    times = [when for when, _ in targets[0].provider.calls]  # type: ignore[attr-defined]
    waits = call.decisions[0].detail["waits"]
    for n, (wait, before, after) in enumerate(zip(waits, times, times[1:], strict=False)):
        floor = min(0.01 * 2**n, 0.03)
        ceiling = min(0.01 * 2**n + 0.01, 0.03)  # jitter up to initial_s, capped at max_s
        assert floor <= wait["wait_ms"] / 1000 <= ceiling
        assert after - before >= wait["wait_ms"] / 1000
    assert call.decisions[0].detail["waited_ms"] == pytest.approx(
        sum(w["wait_ms"] for w in waits), abs=0.2
    )


def test_deadline_stops_the_backoff_that_would_pass_it() -> None:
    policy, targets = build(
        [[Outcome(ErrorKind.SERVER_ERROR)] * 4, []],
        retries=3,
        backoff=Backoff(initial_s=0.2, max_s=1.0),
        deadline_s=0.1,
    )
    call = ask()
    started = time.monotonic()
    answer = asyncio.run(policy.complete(call))
    # The first backoff (≥ 0.2s) would outlast the 0.1s deadline: no retry, no wait; the
    # next target is still tried within the deadline.
    assert time.monotonic() - started < 0.1
    assert answer.message.content == "p1"
    assert len(targets[0].provider.calls) == 1  # type: ignore[attr-defined]
    assert "waits" not in call.decisions[0].detail


def test_retry_on_refuses_kinds_that_are_never_retried() -> None:
    with pytest.raises(ValueError, match="context_length_exceeded is never retried"):
        FailoverConfig(chain=["a"], retry_on=[ErrorKind.CONTEXT_LENGTH])
    with pytest.raises(ValueError, match="caller's fault"):
        FailoverConfig(chain=["a"], retry_on=[ErrorKind.BAD_REQUEST])


@pytest.mark.parametrize("first", [Outcome(), Outcome(ErrorKind.SERVER_ERROR)])
def test_a_retrying_chain_leaves_no_cyclic_garbage(first: Outcome) -> None:
    """Under load, cycles left per request pile up for full collections (tens of ms each):
    tenacity's retrier must be freed by reference counting once the call is done."""
    policy, _ = build([[first], []], retries=2)

    async def main() -> str:
        return await run(policy, ask(), stream=False)

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert asyncio.run(main()) == "p0"
        gc.collect()
        left = {type(o).__module__ for o in gc.garbage if not isinstance(o, dict | list | tuple)}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not {m for m in left if m.startswith("tenacity")}
