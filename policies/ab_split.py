"""ab_split: send each request to one of several weighted variants.

Weights are relative (any non-negative numbers; they need not sum to 100; a weight of 0 turns a
variant off). With `sticky`, the variant is a pure function of the request's user, a header or a
metadata key: a SHA-256 of (salt, key) picks a point in [0, 1), the same in every process and
after every restart, so one user stays in one arm. Without `sticky`, or when the request does
not carry the key, the point is random. The salt defaults to the node's path in the file; set
`salt` to keep assignments when the experiment moves. With a `max_cost_usd`, a variant whose
targets all exceed it is passed over, the same point picking among the variants that fit.

    ab_split:
      sticky: user            # or header.x-session, metadata.account
      variants: {A: {weight: 50, to: smart}, B: {weight: 50, to: creative}}
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.routing import Call, Node
from policies.base import Builder, Loc, NodeSpec, Policy, PolicyConfig
from policies.choice import Choice
from policies.request_keys import RequestKey, as_text


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(ge=0)
    to: NodeSpec


class AbSplitConfig(PolicyConfig):
    variants: dict[str, Variant] = Field(min_length=1)
    sticky: str | None = None  # user | header.<name> | metadata.<key>
    salt: str | None = None

    @field_validator("sticky")
    @classmethod
    def _known_key(cls, value: str | None) -> str | None:
        if value is not None:
            RequestKey.parse(value)
        return value

    @model_validator(mode="after")
    def _some_weight(self) -> AbSplitConfig:
        if not any(v.weight > 0 for v in self.variants.values()):
            raise ValueError("at least one variant needs a weight above 0")
        return self


def stable_point(salt: str, key: str) -> float:
    """A point in [0, 1) that depends on nothing but (salt, key): no process or run differs."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(point: float, weights: dict[str, float]) -> str:
    """The variant whose share of the cumulative weights holds `point` (in [0, 1))."""
    live = [(name, w) for name, w in weights.items() if w > 0]
    total = sum(w for _, w in live)
    mark = point * total
    reached = 0.0
    for name, weight in live:
        reached += weight
        if mark < reached:
            return name
    return live[-1][0]  # point * total rounded up to the very end


class AbSplit(Choice):
    def __init__(
        self,
        variants: dict[str, Node],
        weights: dict[str, float],
        path: str,
        *,
        sticky: RequestKey | None = None,
        salt: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.variants = variants
        self.weights = weights
        self.path = path
        self.sticky = sticky
        self.salt = salt if salt is not None else path
        self.rng = rng or random.Random()
        total = sum(weights.values())
        self.shares = {name: w / total for name, w in weights.items()}

    @property
    def label(self) -> str:
        return "ab_split"

    def children(self) -> list[Node]:
        return list(self.variants.values())

    def describe(self) -> dict[str, Any]:
        return {
            "label": "ab_split",
            "path": self.path,
            "policy": "ab_split",
            "sticky": str(self.sticky) if self.sticky else None,
            "variants": {
                name: {"weight": self.weights[name], "to": child.describe()}
                for name, child in self.variants.items()
            },
        }

    def point_for(self, key: str) -> float:
        """Where a sticky key falls, in [0, 1)."""
        return stable_point(self.salt, key)

    def point(self, call: Call) -> tuple[float, bool]:
        """The request's point in [0, 1), and whether it came from the sticky key."""
        if self.sticky is not None:
            value = self.sticky.value(call)
            if value is not None and as_text(value) != "":
                return self.point_for(as_text(value)), True
        return self.rng.random(), False

    def span_attributes(self, decision: Any) -> dict[str, Any]:
        """SPEC's attributes on this node's span (app/hops.py)."""
        return {
            "ab_test.variant": decision.detail.get("variant"),
            "ab_test.split_ratio": decision.detail.get("split_ratio"),
            "ab_test.sticky": decision.detail.get("sticky"),
        }

    async def choose(self, call: Call) -> Node:
        point, sticky = self.point(call)
        variant = pick(point, self.weights)
        detail: dict[str, Any] = {}
        if not call.within_budget(self.variants[variant]):
            fitting = {
                name: w
                for name, w in self.weights.items()
                if call.within_budget(self.variants[name])
            }
            if any(w > 0 for w in fitting.values()):
                detail["over_budget"] = variant
                variant = pick(point, fitting)
        call.decide(
            "ab_split",
            self.path,
            variant,
            variant=variant,
            split_ratio=round(self.shares[variant], 4),
            weights=self.weights,
            sticky=str(self.sticky) if sticky and self.sticky else None,
            **detail,
        )
        return self.variants[variant]


def _build(config: AbSplitConfig, builder: Builder, loc: Loc) -> Node:
    variants = {
        name: builder.node(variant.to, (*loc, "variants", name, "to"))
        for name, variant in config.variants.items()
    }
    weights = {name: variant.weight for name, variant in config.variants.items()}
    sticky = RequestKey.parse(config.sticky) if config.sticky else None
    return AbSplit(variants, weights, ".".join(map(str, loc)), sticky=sticky, salt=config.salt)


POLICY = Policy(key="ab_split", config=AbSplitConfig, build=_build)
