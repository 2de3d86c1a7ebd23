"""cost_threshold: heuristic and LLM complexity scores, the threshold, costs, budgets."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.complexity import heuristic_score, parse_score
from tests.fakes.openai_fake import Fail, Reply
from tests.routing_helpers import SIM, build, decision, run

HEURISTIC = """
  default:
    cost_threshold: {scorer: heuristic, threshold: 0.5, below: cheap, above: strong}
"""

SIMPLE = "What is the capital of France?"
COMPLEX = """I need help debugging and optimising this service. Step by step:
1. Explain why the function below deadlocks under load.
2. Compare two fixes and analyse the trade-offs in latency and memory.
3. Then design a test plan that proves the fix.

```python
def worker(queue, lock):
    with lock:
        item = queue.get()
        process(item)
```
"""


def test_heuristic_orders_simple_below_complex_and_stays_in_range() -> None:
    assert heuristic_score("hi") == 0.0
    assert heuristic_score(SIMPLE) < 0.2
    assert heuristic_score(COMPLEX) > 0.7


@given(st.text(max_size=3000))
def test_heuristic_is_a_score_in_the_unit_interval(text: str) -> None:
    assert 0.0 <= heuristic_score(text) <= 1.0


@given(base=st.text(max_size=300), cue=st.sampled_from(["Explain why", "step by step", "```"]))
def test_adding_a_cue_never_lowers_the_score(base: str, cue: str) -> None:
    assert heuristic_score(base + "\n" + cue + "\n") >= heuristic_score(base) - 1e-9


def test_heuristic_takes_microseconds_and_is_bounded_on_a_long_prompt() -> None:
    def per_call_us(text: str, n: int = 200) -> float:
        started = time.perf_counter()
        for _ in range(n):
            heuristic_score(text)
        return (time.perf_counter() - started) / n * 1e6

    # Tens of microseconds here; the bounds leave room for a slow, busy CI machine.
    assert per_call_us(SIMPLE) < 200
    assert per_call_us(COMPLEX) < 500
    assert per_call_us(COMPLEX * 200) < 2500  # ~70 kB: only the head is scanned for cues


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("0.8", 0.8),
        ("Complexity: 0.85.", 0.85),
        (".8", 0.8),
        ("0,8", 0.8),
        ("8/10", 0.8),
        ("8 out of 10", 0.8),
        ("80%", 0.8),
        ("7", 0.7),
        ("On a scale from 0.0 to 1.0, I rate it 0.3", 0.3),
        ("<think>It could be 0.9 but</think> 0.2", 0.2),
        ("1", 1.0),
        ("0", 0.0),
        ("high", None),
        ("", None),
        ("-0.4", None),
        ("150", None),
        ("1.5e3", None),
        ("NaN", None),
        ("gpt4", None),
    ],
)
def test_llm_ratings_are_parsed_robustly(answer: str, score: float | None) -> None:
    assert parse_score(answer) == score


@given(
    st.floats(min_value=0, max_value=1, allow_nan=False),
    st.sampled_from(["{}", "Score: {}", "{}."]),
)
def test_any_rating_in_range_is_read_back(value: float, wrapper: str) -> None:
    text = wrapper.format(f"{value:.3f}")
    assert parse_score(text) == pytest.approx(round(value, 3), abs=1e-9)


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), max_size=80))
def test_text_without_digits_has_no_rating(text: str) -> None:
    assert parse_score(text) is None


async def test_heuristic_route_records_score_threshold_and_costs() -> None:
    gateway = build(HEURISTIC)
    low = await run(gateway, SIMPLE, max_tokens=100)
    d = decision(low, "cost_threshold")
    assert d["outcome"] == "below" and low.answer.target.name == "cheap"
    assert d["detail"]["scorer"] == "heuristic" and d["detail"]["threshold"] == 0.5
    assert d["detail"]["score"] == heuristic_score(SIMPLE)
    costs = d["detail"]["estimated_cost_usd"]
    # 100 output tokens dominate: cheap $0.60/M, strong $10/M.
    assert costs["below"] == pytest.approx(low.estimated_cost_usd(gateway.node_for("cheap")))
    assert costs["above"] > 10 * costs["below"]
    high = await run(gateway, COMPLEX)
    assert decision(high, "cost_threshold")["outcome"] == "above"
    assert high.answer.target.name == "strong"


async def test_a_side_over_budget_is_passed_over() -> None:
    call = await run(build(HEURISTIC), COMPLEX, max_tokens=1000, max_cost_usd=0.002)
    d = decision(call, "cost_threshold")
    assert d["outcome"] == "below" and d["detail"]["over_budget"] == "above"
    assert call.answer.target.name == "cheap"


def scorer_gateway(url: str):
    base = (
        SIM.replace(
            "providers:\n",
            f'providers:\n  judge: {{type: openai, base_url: "{url}/v1", api_key: k}}\n',
        )
        + "  small: {provider: judge, model: gpt-4o-mini}\n"
    )
    routes = """
  default:
    cost_threshold: {scorer: {model: small}, threshold: 0.7, below: cheap, above: strong}
"""
    return build(routes, base=base)


@pytest.mark.parametrize(
    ("answer", "side", "score"),
    [("0.9", "above", 0.9), ("Complexity: 3/10", "below", 0.3), ("very hard!", "below", 0.5)],
)
async def test_llm_scorer_decides_and_garbage_counts_half(openai_fake, answer, side, score) -> None:
    fake, url = openai_fake
    fake.push(Reply(text=answer))
    call = await run(scorer_gateway(url), "Prove that P != NP")
    d = decision(call, "cost_threshold")
    assert (d["outcome"], d["detail"]["score"], d["detail"]["raw"]) == (side, score, answer)
    assert d["detail"]["scorer"] == "small" and d["detail"]["model_called"] is True
    assert "from 0.0" in fake.bodies[0]["messages"][0]["content"]


async def test_a_failing_scorer_counts_half_and_the_request_still_succeeds(openai_fake) -> None:
    fake, url = openai_fake
    fake.push(Fail(503, "overloaded"))
    call = await run(scorer_gateway(url), "anything")
    d = decision(call, "cost_threshold")
    assert d["detail"]["score"] == 0.5 and d["detail"]["error"] == "server_error"
    assert call.answer.target.name == "cheap"
