"""cost_threshold: a cheap model for simple requests, a strong one for complex ones.

A complexity score in [0, 1] comes from the `heuristic` scorer (no network) or an LLM `scorer`
(asked to rate the request from 0.0 to 1.0; an answer with no readable number counts 0.5, as
does a scorer that fails). Below the threshold the request goes `below`, at or above it `above`.
The decision records the score, the threshold and the estimated cost of each side (its cheapest
target for this request). With a `max_cost_usd`, a side whose targets all exceed it is passed
over for the other side.

    cost_threshold:
      scorer: {model: fast}      # or: heuristic (the default)
      threshold: 0.7
      below: fast
      above: smart
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.routing import Call, Node
from policies.base import Builder, Loc, NodeSpec, Policy, PolicyConfig
from policies.choice import Choice
from policies.complexity import heuristic_score, parse_score
from policies.judge import Judge, JudgeConfig
from policies.request_keys import user_text

DEFAULT_PROMPT = (
    "Rate how complex the user's request is, from 0.0 (trivial: a greeting, a simple fact) to "
    "1.0 (hard: multi-step reasoning, code, careful analysis). Answer with the number only."
)
GARBAGE_SCORE = 0.5  # what an unreadable rating counts as


class ScorerConfig(JudgeConfig):
    pass


class CostThresholdConfig(PolicyConfig):
    scorer: Literal["heuristic"] | ScorerConfig = "heuristic"
    threshold: float = Field(default=0.5, ge=0, le=1)
    below: NodeSpec
    above: NodeSpec


class CostThreshold(Choice):
    def __init__(
        self, below: Node, above: Node, threshold: float, path: str, judge: Judge | None = None
    ) -> None:
        self.below = below
        self.above = above
        self.threshold = threshold
        self.path = path
        self.judge = judge

    @property
    def label(self) -> str:
        return "cost_threshold"

    @property
    def scorer(self) -> str:
        return self.judge.target.name if self.judge else "heuristic"

    def children(self) -> list[Node]:
        return [self.below, self.above]

    def describe(self) -> dict[str, Any]:
        return {
            "label": "cost_threshold",
            "path": self.path,
            "policy": "cost_threshold",
            "scorer": self.scorer,
            "threshold": self.threshold,
            "below": self.below.describe(),
            "above": self.above.describe(),
        }

    async def _score(self, call: Call) -> tuple[float, dict[str, Any]]:
        text = user_text(call.request)
        if self.judge is None:
            return heuristic_score(text), {}
        verdict = await self.judge.ask(call, text)
        parsed = parse_score(verdict.raw) if verdict.raw is not None else None
        detail = {"raw": None if verdict.raw is None else verdict.raw[:200], **verdict.detail()}
        if parsed is None:
            detail["unparsed"] = True
        return (GARBAGE_SCORE if parsed is None else parsed), detail

    def span_attributes(self, decision: Any) -> dict[str, Any]:
        """SPEC's attributes on this node's span (app/hops.py)."""
        costs = decision.detail.get("estimated_cost_usd") or {}
        return {
            "query.complexity_score": decision.detail.get("score"),
            "routing.threshold": decision.detail.get("threshold"),
            "routing.estimated_cost_below_usd": costs.get("below"),
            "routing.estimated_cost_above_usd": costs.get("above"),
        }

    async def choose(self, call: Call) -> Node:
        score, detail = await self._score(call)
        side = "above" if score >= self.threshold else "below"
        sides = {"below": self.below, "above": self.above}
        other = "below" if side == "above" else "above"
        if not call.within_budget(sides[side]) and call.within_budget(sides[other]):
            detail["over_budget"] = side
            side = other
        costs = {
            name: round(min((call.estimated_cost_usd(t) for t in node.targets()), default=0.0), 8)
            for name, node in sides.items()
        }
        call.decide(
            "cost_threshold",
            self.path,
            side,
            scorer=self.scorer,
            score=score,
            threshold=self.threshold,
            estimated_cost_usd=costs,
            **detail,
        )
        return sides[side]


def _build(config: CostThresholdConfig, builder: Builder, loc: Loc) -> Node:
    below = builder.node(config.below, (*loc, "below"))
    above = builder.node(config.above, (*loc, "above"))
    judge = None
    if isinstance(config.scorer, ScorerConfig):
        scorer = config.scorer
        judge = Judge(
            builder.target(scorer.model, (*loc, "scorer", "model")),
            scorer.prompt or DEFAULT_PROMPT,
            cache_size=scorer.cache_size,
            max_tokens=scorer.max_tokens,
        )
    return CostThreshold(below, above, config.threshold, ".".join(map(str, loc)), judge)


POLICY = Policy(key="cost_threshold", config=CostThresholdConfig, build=_build)
