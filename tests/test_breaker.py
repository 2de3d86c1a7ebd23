"""The circuit breaker's state machine, driven by hypothesis through every order of events.

The clock is the test's: time moves only when a rule says so, so cooldowns are exact.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from app.breaker import Breaker, BreakerConfig, MemoryBreakerStore


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against the rules as the issue states them:
    open after N consecutive failures, one half-open probe after the cooldown, closed on success.
    The model below keeps only what those rules talk about: the failure streak, when the
    circuit last opened, and whether a probe is out."""

    @initialize(failures=st.integers(1, 5), cooldown=st.floats(0.5, 30))
    def setup(self, failures: int, cooldown: float) -> None:
        self.config = BreakerConfig(failures=failures, cooldown_s=cooldown)
        self.breaker = Breaker()
        self.now = 1000.0
        self.streak = 0
        self.opened_at: float | None = None
        self.probe_since: float | None = None

    def expected_phase(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if self.now - self.opened_at < self.config.cooldown_s else "half_open"

    @rule(dt=st.floats(0, 40))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def ask(self) -> None:
        allowed = self.breaker.allow(self.config, self.now)
        phase = self.expected_phase()
        if phase == "closed":
            assert allowed, "a closed breaker lets every call through"
        elif phase == "open":
            assert not allowed, "an open breaker lets nothing through before its cooldown"
        else:
            probe_out = (
                self.probe_since is not None
                and self.now - self.probe_since < self.config.cooldown_s
            )
            assert allowed == (not probe_out), "half-open: one probe at a time"
            if allowed:
                self.probe_since = self.now

    @rule()
    def succeeded(self) -> None:
        self.breaker.success()
        self.streak, self.opened_at, self.probe_since = 0, None, None
        assert self.breaker.phase(self.config, self.now) == "closed"
        assert self.breaker.allow(self.config, self.now)

    @rule()
    def failed(self) -> None:
        was = self.expected_phase()
        self.breaker.failure(self.config, self.now)
        self.streak += 1
        self.probe_since = None
        if was != "closed" or self.streak >= self.config.failures:
            self.opened_at = self.now
            # Re-opened (a failed probe, or the Nth failure): a full cooldown from now.
            assert self.breaker.phase(self.config, self.now) == "open"

    @precondition(lambda self: self.probe_since is not None)
    @rule()
    def probe_without_verdict(self) -> None:
        self.breaker.release()
        self.probe_since = None

    @invariant()
    def phase_matches(self) -> None:
        if hasattr(self, "config"):
            assert self.breaker.phase(self.config, self.now) == self.expected_phase()
            assert self.breaker.failures == self.streak

    @invariant()
    def closed_until_the_nth_failure(self) -> None:
        if hasattr(self, "config") and self.opened_at is None:
            assert self.streak < self.config.failures


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40)
TestBreakerMachine = BreakerMachine.TestCase


@given(failures=st.integers(1, 6), extra=st.integers(0, 3))
def test_exactly_n_consecutive_failures_open_it(failures: int, extra: int) -> None:
    config = BreakerConfig(failures=failures, cooldown_s=10)
    breaker = Breaker()
    for _ in range(failures - 1):
        breaker.failure(config, now=0)
    assert breaker.phase(config, 0) == "closed"
    breaker.success()  # a success breaks the streak
    for _ in range(failures - 1):
        breaker.failure(config, now=0)
    assert breaker.phase(config, 0) == "closed"
    for _ in range(1 + extra):
        breaker.failure(config, now=0)
    assert breaker.phase(config, 0) == "open"
    assert breaker.phase(config, 9.99) == "open"
    assert breaker.phase(config, 10) == "half_open"


def test_a_probe_that_never_reports_is_given_up_after_a_cooldown() -> None:
    config = BreakerConfig(failures=1, cooldown_s=5)
    breaker = Breaker()
    breaker.failure(config, now=0)
    assert breaker.allow(config, 5)  # the probe
    assert not breaker.allow(config, 9)  # it is still out
    assert breaker.allow(config, 10)  # it never came back: another may try


def test_memory_store_keeps_one_breaker_per_key_and_describes_them() -> None:
    now = [0.0]
    store = MemoryBreakerStore(clock=lambda: now[0])
    config = BreakerConfig(failures=2, cooldown_s=3)

    async def scenario() -> None:
        await store.failure("smart", config)
        await store.failure("smart", config)
        await store.failure("cheap", config)
        assert not await store.allow("smart", config)
        assert await store.allow("cheap", config)
        assert store.describe() == {
            "smart": {"state": "open", "failures": 2, "retry_in_s": 3.0},
            "cheap": {"state": "closed", "failures": 1},
        }
        now[0] = 3.0
        assert await store.allow("smart", config)  # the probe
        assert not await store.allow("smart", config)
        await store.release("smart", config)  # the probe ended with the caller's own fault
        assert await store.allow("smart", config)
        await store.success("smart", config)
        assert store.describe()["smart"] == {"state": "closed", "failures": 0}

    asyncio.run(scenario())
