"""ab_split: weighted variants, sticky assignment stable across instances and processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import ConfigError
from policies.ab_split import pick, stable_point
from tests.routing_helpers import build, decision, run

ROUTES = """
  default:
    ab_split:
      sticky: user
      variants: {A: {weight: 30, to: strong}, B: {weight: 70, to: claude}}
  by-header:
    ab_split:
      sticky: header.x-session
      variants: {A: {weight: 1, to: strong}, B: {weight: 1, to: claude}}
  by-meta:
    ab_split:
      sticky: metadata.account
      salt: fixed
      variants: {A: {weight: 1, to: strong}, B: {weight: 1, to: claude}, C: {weight: 0, to: cheap}}
"""


@given(
    weights=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=5).filter(
        lambda ws: sum(ws) > 0
    )
)
@settings(max_examples=40, deadline=None)
def test_sticky_points_spread_as_the_weights_say(weights: list[int]) -> None:
    named = {f"v{i}": float(w) for i, w in enumerate(weights)}
    n = 4000
    counts = Counter(pick(stable_point("salt", f"user-{i}"), named) for i in range(n))
    total = sum(weights)
    for name, weight in named.items():
        share = counts[name] / n
        assert abs(share - weight / total) < 0.035, (name, share, weight / total)
        if weight == 0:
            assert counts[name] == 0


@given(user=st.text(min_size=1, max_size=40))
@settings(max_examples=50)
def test_the_same_user_gets_the_same_variant_in_a_fresh_tree(user: str) -> None:
    first = build(ROUTES).routes["default"]
    again = build(ROUTES).routes["default"]  # a restart: new objects, nothing shared
    assert pick(first.point_for(user), first.weights) == pick(again.point_for(user), again.weights)


def test_assignment_is_the_same_in_another_process() -> None:
    users = [f"user-{i}" for i in range(200)]
    here = [pick(stable_point("s", u), {"A": 1, "B": 1}) for u in users]
    code = (
        "from policies.ab_split import pick, stable_point\n"
        f"print(''.join(pick(stable_point('s', u), {{'A': 1, 'B': 1}}) for u in {users!r}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hashing differs; ours must not
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "".join(here)
    assert 70 < here.count("A") < 130


async def test_decision_records_variant_ratio_and_key() -> None:
    gateway = build(ROUTES)
    call = await run(gateway, "hi", user="user-7")
    d = decision(call, "ab_split")
    assert d["outcome"] in ("A", "B") and d["outcome"] == d["detail"]["variant"]
    assert d["detail"]["split_ratio"] == {"A": 0.3, "B": 0.7}[d["outcome"]]
    assert d["detail"]["sticky"] == "user" and d["detail"]["weights"] == {"A": 30, "B": 70}
    assert call.answer.target.name == {"A": "strong", "B": "claude"}[d["outcome"]]
    for _ in range(5):  # sticky: again and again the same
        assert decision(await run(gateway, "other text", user="user-7"), "ab_split") == d


async def test_sticky_by_header_and_metadata_and_random_without_a_key() -> None:
    gateway = build(ROUTES)
    header = [
        decision(
            await run(gateway, "x", route="by-header", headers={"X-Session": "s1"}), "ab_split"
        )
        for _ in range(5)
    ]
    assert (
        len({d["outcome"] for d in header}) == 1
        and header[0]["detail"]["sticky"] == "header.x-session"
    )
    meta = await run(gateway, "x", route="by-meta", metadata={"account": 42})
    assert decision(meta, "ab_split")["outcome"] == pick(
        stable_point("fixed", "42"), {"A": 1, "B": 1}
    )
    # No key: random, so both arms show up, and the weight-0 arm never does.
    seen = Counter()
    for _ in range(60):
        seen[decision(await run(gateway, "x", route="by-meta"), "ab_split")["outcome"]] += 1
    assert set(seen) == {"A", "B"}
    assert (
        decision(await run(gateway, "x", route="by-meta"), "ab_split")["detail"]["sticky"] is None
    )


async def test_a_variant_over_budget_is_passed_over() -> None:
    gateway = build(ROUTES)
    # Find a user assigned to B (claude, the dearer), then give a budget only A fits.
    user = next(
        u
        for u in (f"u{i}" for i in range(100))
        if pick(gateway.routes["default"].point_for(u), gateway.routes["default"].weights) == "B"
    )
    call = await run(gateway, "hi", user=user, max_tokens=1000, max_cost_usd=0.012)
    d = decision(call, "ab_split")
    assert d["outcome"] == "A" and d["detail"]["over_budget"] == "B"
    assert call.answer.target.name == "strong"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{variants: {A: {weight: 0, to: strong}}}", "at least one variant needs a weight above 0"),
        (
            "{sticky: cookie, variants: {A: {weight: 1, to: strong}}}",
            "unknown request key 'cookie'",
        ),
        ("{variants: {A: {weight: -1, to: strong}}}", "greater than or equal to 0"),
        ("{variants: {A: {weigth: 1, to: strong}}}", "did you mean 'weight'"),
    ],
)
def test_config_mistakes(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build(f"  default:\n    ab_split: {body}\n")
    assert expected in str(raised.value)
