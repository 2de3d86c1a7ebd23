"""Chaos, bounded for CI: 500 requests, 30 % of upstream calls faulted, across three providers
behind failover routes (tests/chaos.py says what is checked; bench/chaos.py runs 10,000)."""

from __future__ import annotations

import pytest

from tests.chaos import DEADLINE_S, Outcome, check, run_chaos
from tests.fakes.faults import FAULTS, Hit

# Its bounds (requests served, latency) are measured: nothing else may run meanwhile.
pytestmark = pytest.mark.alone


@pytest.fixture(scope="module")
def report():
    return run_chaos(500, 32, seed=11)


def test_every_request_is_answered_or_refused_with_a_typed_error(report) -> None:
    assert report.problems == [], "\n".join(report.problems[:20])
    summary = report.summary()
    assert summary["lost_or_hung"] == 0
    assert report.answered + sum(report.typed_errors.values()) == 500
    assert set(report.typed_errors) <= {"rate_limited", "upstream_error", "upstream_timeout"}
    # Failover turned most faults into answers.
    assert report.answered > 450, summary


def test_none_hangs_past_its_deadline(report) -> None:
    assert max(report.latencies) < DEADLINE_S + 1.0


def test_the_faults_were_the_mix_asked_for(report) -> None:
    assert set(report.faults) == set(FAULTS), report.faults
    share = sum(report.faults.values()) / report.upstream_calls
    assert 0.2 < share < 0.4, share


def test_no_failed_attempt_is_billed(report) -> None:
    assert report.answered_cost > 0
    assert report.metrics_cost == pytest.approx(report.answered_cost, rel=1e-6)


# ---- the checker itself: a gateway that lied would be caught ----------------------------------


def _hit(provider: str, fault: str | None) -> Hit:
    return Hit(provider, "chaos-1", fault, 0.0, 0.1)


def _answer(attempts: list[dict], usage=(11, 7), cost=None) -> Outcome:
    cost = (usage[0] * 0.15 + usage[1] * 0.60) / 1e6 if cost is None else cost
    return Outcome(
        "chaos-1",
        "default",
        False,
        200,
        0.2,
        answered=True,
        attempts=attempts,
        provider="openai",
        target="gpt",
        usage={"input_tokens": usage[0], "output_tokens": usage[1], "total_tokens": sum(usage)},
        cost_usd=cost,
    )


FAILED = {"provider": "anthropic", "error": "server_error"}
OK = {"provider": "openai", "ok": True}


def test_the_checker_accepts_a_true_account() -> None:
    assert check(_answer([FAILED, OK]), [_hit("anthropic", "503"), _hit("openai", None)]) == []


@pytest.mark.parametrize(
    ("outcome", "hits", "complaint"),
    [
        (_answer([OK]), [_hit("anthropic", "503"), _hit("openai", None)], "upstreams saw"),
        (_answer([FAILED, OK]), [_hit("anthropic", "silence"), _hit("openai", None)], "silence"),
        (_answer([OK, OK]), [_hit("openai", "429"), _hit("openai", None)], "attempt says ok"),
        (
            _answer([FAILED, OK], usage=(22, 14)),
            [_hit("anthropic", "500"), _hit("openai", None)],
            "not one call's",
        ),
        (
            _answer([FAILED, OK], cost=1.0),
            [_hit("anthropic", "500"), _hit("openai", None)],
            "is not the answering call's",
        ),
    ],
    ids=["missing-attempt", "wrong-error-class", "fault-called-ok", "billed-twice", "overcharged"],
)
def test_the_checker_catches_a_false_account(outcome, hits, complaint) -> None:
    problems = check(outcome, hits)
    assert any(complaint in p for p in problems), problems


def test_a_slow_answer_is_reported_as_hung() -> None:
    slow = _answer([OK])
    slow.latency_s = DEADLINE_S + 2
    assert any("deadline" in p for p in check(slow, [_hit("openai", None)]))
