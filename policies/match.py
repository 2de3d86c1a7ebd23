"""match: ordered rules on the request's attributes; the first rule that holds wins.

A rule's `when` maps request keys (`metadata.<key>`, `user`, `header.<name>`, `env`, the
gateway's ENVIRONMENT) to a value, or a list of values any of which will do; every key must hold.
A last rule without `when` is the default. A request no rule fits is refused (400, no_match).

    match:
      - when: {metadata.tier: [premium, enterprise]}
        to: smart
      - when: {env: production}
        to: resilient
      - to: fast
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.errors import InvalidRequest
from app.routing import Call, Node
from policies.base import Builder, Loc, NodeSpec, Policy, PolicyConfig
from policies.choice import Choice
from policies.request_keys import RequestKey, as_text


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: dict[str, Any] | None = None
    to: NodeSpec

    @field_validator("when")
    @classmethod
    def _known_keys(cls, when: dict[str, Any] | None) -> dict[str, Any] | None:
        if when is not None and not when:
            raise ValueError("an empty `when` always holds: leave it out for the default rule")
        for key in when or {}:
            RequestKey.parse(key)
        return when


class MatchConfig(PolicyConfig):
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_last(self) -> MatchConfig:
        for rule in self.rules[:-1]:
            if rule.when is None:
                raise ValueError("only the last rule may leave out `when` (the default)")
        return self


class Condition:
    """One `key: value(s)` of a rule, parsed once."""

    def __init__(self, key: str, expected: Any) -> None:
        self.key = RequestKey.parse(key)
        values = expected if isinstance(expected, list) else [expected]
        fold = self.key.source in ("env", "header")  # ENVIRONMENT=Production is production
        self._fold = fold
        self.expected = {self._form(v) for v in values}

    def _form(self, value: Any) -> str | None:
        if value is None:
            return None
        text = as_text(value)
        return text.lower() if self._fold else text

    def holds(self, call: Call) -> bool:
        return self._form(self.key.value(call)) in self.expected


class Match(Choice):
    def __init__(
        self, rules: list[tuple[list[Condition], dict[str, Any] | None, Node]], path: str
    ) -> None:
        self.rules = rules
        self.path = path

    @property
    def label(self) -> str:
        return "match"

    def children(self) -> list[Node]:
        return [node for _, _, node in self.rules]

    def describe(self) -> dict[str, Any]:
        return {
            "label": "match",
            "path": self.path,
            "policy": "match",
            "rules": [{"when": when, "to": node.describe()} for _, when, node in self.rules],
        }

    def span_attributes(self, decision: Any) -> dict[str, Any]:
        """The matched rule on this node's span (app/hops.py)."""
        return {"match.rule": decision.detail.get("rule")}

    async def choose(self, call: Call) -> Node:
        for index, (conditions, when, node) in enumerate(self.rules):
            if all(condition.holds(call) for condition in conditions):
                call.decide(
                    "match",
                    self.path,
                    node.label,
                    rule=index,
                    when=when if when is not None else "default",
                )
                return node
        call.decide("match", self.path, "no_match")
        raise InvalidRequest(
            f"no rule of the match at {self.path} applies to this request, and it has no default",
            code="no_match",
        )


def _normalize(value: Any) -> Any:
    return {"rules": value} if isinstance(value, list) else value


def _build(config: MatchConfig, builder: Builder, loc: Loc) -> Node:
    rules = []
    for index, rule in enumerate(config.rules):
        conditions = [Condition(key, value) for key, value in (rule.when or {}).items()]
        node = builder.node(rule.to, (*loc, "rules", index, "to"))
        rules.append((conditions, rule.when, node))
    return Match(rules, ".".join(map(str, loc)))


POLICY = Policy(key="match", config=MatchConfig, build=_build, normalize=_normalize)
