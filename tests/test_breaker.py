"""The circuit breaker's state machine, driven by hypothesis through every order of events.

It runs against the state store the failover policy uses (`app/state.py`, this process's memory)
with the test's own clock: time moves only when a rule says so, so cooldowns are exact. The
store's calls never wait on anything, so each is run to completion in place.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from app.state import MemoryStore

T = TypeVar("T")
KEY = "breaker:target:smart"


def done(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that completes without suspending."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value
    raise AssertionError("the memory store suspended")


class BreakerMachine(RuleBasedStateMachine):
    """The store's breaker against the rules as the issue states them: open after N consecutive
    failures, one half-open probe after the cooldown, closed on success. The model keeps only
    what those rules talk about: the failure streak, when it last opened, whether a probe is out.
    """

    @initialize(failures=st.integers(1, 5), cooldown=st.floats(0.5, 30))
    def setup(self, failures: int, cooldown: float) -> None:
        self.threshold, self.cooldown = failures, cooldown
        self.now = 1000.0
        self.store = MemoryStore(clock=lambda: self.now)
        self.streak = 0
        self.opened_at: float | None = None
        self.probe_since: float | None = None

    def expected_state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if self.now - self.opened_at < self.cooldown else "half_open"

    @rule(dt=st.floats(0, 40))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def ask(self) -> None:
        allowed = done(self.store.breaker_allow(KEY, self.cooldown))
        state = self.expected_state()
        if state == "closed":
            assert allowed, "a closed breaker lets every call through"
        elif state == "open":
            assert not allowed, "an open breaker lets nothing through before its cooldown"
        else:
            probe_out = self.probe_since is not None and self.now - self.probe_since < self.cooldown
            assert allowed == (not probe_out), "half-open: one probe at a time"
            if allowed:
                self.probe_since = self.now

    @rule()
    def succeeded(self) -> None:
        done(self.store.breaker_success(KEY))
        self.streak, self.opened_at, self.probe_since = 0, None, None
        assert done(self.store.breaker_allow(KEY, self.cooldown))

    @rule()
    def failed(self) -> None:
        was = self.expected_state()
        done(self.store.breaker_failure(KEY, self.threshold, self.cooldown))
        self.streak += 1
        self.probe_since = None
        if was != "closed" or self.streak >= self.threshold:
            self.opened_at = self.now  # (re-)opened for a full cooldown from now

    @precondition(lambda self: self.probe_since is not None)
    @rule()
    def probe_without_verdict(self) -> None:
        done(self.store.breaker_release(KEY))
        self.probe_since = None

    @invariant()
    def state_matches(self) -> None:
        if hasattr(self, "store"):
            assert done(self.store.breaker_state(KEY, self.cooldown)) == self.expected_state()

    @invariant()
    def closed_until_the_nth_failure(self) -> None:
        if hasattr(self, "store") and self.opened_at is None:
            assert self.streak < self.threshold


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40)
TestBreakerMachine = BreakerMachine.TestCase


@given(failures=st.integers(1, 6), extra=st.integers(0, 3))
def test_exactly_n_consecutive_failures_open_it(failures: int, extra: int) -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    for _ in range(failures - 1):
        done(store.breaker_failure(KEY, failures, 10))
    assert done(store.breaker_state(KEY, 10)) == "closed"
    done(store.breaker_success(KEY))  # a success breaks the streak
    for _ in range(failures - 1):
        done(store.breaker_failure(KEY, failures, 10))
    assert done(store.breaker_state(KEY, 10)) == "closed"
    for _ in range(1 + extra):
        done(store.breaker_failure(KEY, failures, 10))
    assert done(store.breaker_state(KEY, 10)) == "open"
    now[0] = 9.99
    assert done(store.breaker_state(KEY, 10)) == "open"
    now[0] = 10
    assert done(store.breaker_state(KEY, 10)) == "half_open"


def test_a_probe_that_never_reports_is_given_up_after_a_cooldown() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    done(store.breaker_failure(KEY, 1, 5))
    now[0] = 5
    assert done(store.breaker_allow(KEY, 5))  # the probe
    now[0] = 9
    assert not done(store.breaker_allow(KEY, 5))  # it is still out
    now[0] = 10
    assert done(store.breaker_allow(KEY, 5))  # it never came back: another may try
