"""classify: send the request down the branch of its label.

The label comes from `rules` (keywords or regexes per label, case-insensitive, labels tried in
their declared order, first match wins) or from an LLM `classifier` whose answer is parsed
robustly (case, punctuation, quotes, markdown, a label inside a sentence). No rule matched, an
answer naming no label (or several), or a classifier that failed: `otherwise`.

    classify:
      rules: {creative: [story, poem], analytical: {keywords: [compare], regex: ["pros? and cons"]}}
      # or: classifier: {model: fast, labels: [creative, analytical], prompt: "…{labels}…"}
      branches: {creative: creative, analytical: {failover: [smart, creative]}}
      otherwise: fast
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.routing import Call, Node
from policies.base import Builder, Loc, NodeSpec, Policy, PolicyConfig
from policies.choice import Choice
from policies.judge import Judge, JudgeConfig
from policies.request_keys import user_text

DEFAULT_PROMPT = (
    "You classify requests. Read the user's message and answer with exactly one of these "
    "labels: {labels}. Answer with the label only, nothing else."
)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(default_factory=list)  # whole words or phrases
    regex: list[str] = Field(default_factory=list)  # Python regular expressions


class ClassifierConfig(JudgeConfig):
    labels: list[str] | None = None  # default: the branch labels, in order


class ClassifyConfig(PolicyConfig):
    rules: dict[str, list[str] | RuleSet] | None = None
    classifier: ClassifierConfig | None = None
    branches: dict[str, NodeSpec] = Field(min_length=1)
    otherwise: NodeSpec

    @model_validator(mode="after")
    def _one_source(self) -> ClassifyConfig:
        if (self.rules is None) == (self.classifier is None):
            raise ValueError("give either rules or a classifier")
        return self


# ---- parsing a classifier's answer ----------------------------------------------------------

_THINKING = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.S | re.I)
_NOT_WORD = re.compile(r"[^\w\s]+")
_SEPARATORS = re.compile(r"[_\s]+")


def _normal(text: str) -> str:
    """Lower case, punctuation and underscores as spaces, spaces collapsed."""
    return _SEPARATORS.sub(" ", _NOT_WORD.sub(" ", text.lower())).strip()


def _mentions(text: str, phrase: str) -> re.Match[str] | None:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text)


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The label a model's answer names, or None when it names none or is ambiguous.

    'Creative.', '**creative**', 'Label: creative', 'I would say this is creative' all read
    'creative'. An answer naming several labels is read by the one it starts with, else None.
    """
    text = _normal(_THINKING.sub(" ", answer))
    if not text:
        return None
    by_form = {_normal(label): label for label in labels if _normal(label)}
    if text in by_form:
        return by_form[text]
    found = {form: m.start() for form in by_form if (m := _mentions(text, form))}
    # A label inside another ('code' in 'code review') counts as the longer one.
    found = {
        form: at
        for form, at in found.items()
        if not any(form != other and _mentions(other, form) for other in found)
    }
    if len(found) == 1:
        return by_form[next(iter(found))]
    starting = [form for form, at in found.items() if at == 0]
    return by_form[starting[0]] if len(starting) == 1 else None


# ---- the node -------------------------------------------------------------------------------

# (label, [(the rule as written, its compiled pattern)]), in declared order.
Rules = list[tuple[str, list[tuple[str, re.Pattern[str]]]]]


class Classify(Choice):
    def __init__(
        self,
        branches: dict[str, Node],
        otherwise: Node,
        path: str,
        *,
        rules: Rules | None = None,
        judge: Judge | None = None,
        labels: list[str] | None = None,
        classifier: str | None = None,
    ) -> None:
        self.branches = branches
        self.otherwise = otherwise
        self.path = path
        self.rules = rules
        self.judge = judge
        self.labels = labels or list(branches)
        self.classifier = classifier

    @property
    def label(self) -> str:
        return "classify"

    def children(self) -> list[Node]:
        return [*self.branches.values(), self.otherwise]

    def describe(self) -> dict[str, Any]:
        return {
            "label": "classify",
            "path": self.path,
            "policy": "classify",
            "by": "rules" if self.rules is not None else f"classifier {self.classifier}",
            "branches": {label: child.describe() for label, child in self.branches.items()},
            "otherwise": self.otherwise.describe(),
        }

    async def choose(self, call: Call) -> Node:
        text = user_text(call.request)
        if self.rules is not None:
            return self._by_rules(call, text)
        return await self._by_classifier(call, text)

    def span_attributes(self, decision: Any) -> dict[str, Any]:
        """SPEC's attributes on this node's span (app/hops.py)."""
        detail = decision.detail
        return {
            "classification.result": decision.outcome,
            "classification.method": "rules" if detail.get("by") == "rules" else "classifier",
            "classification.raw": detail.get("raw"),
        }

    def _by_rules(self, call: Call, text: str) -> Node:
        for label, patterns in self.rules or ():
            for written, pattern in patterns:
                if match := pattern.search(text):
                    call.decide(
                        "classify",
                        self.path,
                        label,
                        by="rules",
                        label=label,
                        rule=written,
                        matched=match.group(0),
                    )
                    return self.branches[label]
        call.decide("classify", self.path, "otherwise", by="rules", label=None)
        return self.otherwise

    async def _by_classifier(self, call: Call, text: str) -> Node:
        assert self.judge is not None
        verdict = await self.judge.ask(call, text)
        label = parse_label(verdict.raw, self.labels) if verdict.raw is not None else None
        chosen = label if label in self.branches else None
        call.decide(
            "classify",
            self.path,
            chosen or "otherwise",
            classifier=self.classifier,
            label=label,
            raw=None if verdict.raw is None else verdict.raw[:200],
            **verdict.detail(),
        )
        return self.branches[chosen] if chosen else self.otherwise


# ---- compiling ------------------------------------------------------------------------------


def _keyword(word: str) -> re.Pattern[str]:
    # Whole words: 'art' does not match 'start'; a phrase matches across any run of spaces.
    body = r"\s+".join(re.escape(part) for part in word.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _compile_rules(config: ClassifyConfig, builder: Builder, loc: Loc) -> Rules:
    rules: Rules = []
    for label, spec in (config.rules or {}).items():
        at = (*loc, "rules", label)
        if label not in config.branches:
            builder.problem(at, f"the label '{label}' has no branch")
        ruleset = spec if isinstance(spec, RuleSet) else RuleSet(keywords=spec)
        patterns = [(word, _keyword(word)) for word in ruleset.keywords if word.strip()]
        for i, expression in enumerate(ruleset.regex):
            try:
                patterns.append((expression, re.compile(expression, re.IGNORECASE)))
            except re.error as exc:
                builder.problem((*at, "regex", i), f"not a valid regular expression: {exc}")
        if not patterns:
            builder.problem(at, "a label needs at least one keyword or regex")
        rules.append((label, patterns))
    return rules


def _build(config: ClassifyConfig, builder: Builder, loc: Loc) -> Node:
    path = ".".join(map(str, loc))
    branches = {
        label: builder.node(spec, (*loc, "branches", label))
        for label, spec in config.branches.items()
    }
    otherwise = builder.node(config.otherwise, (*loc, "otherwise"))
    if config.rules is not None:
        return Classify(branches, otherwise, path, rules=_compile_rules(config, builder, loc))
    classifier = config.classifier
    assert classifier is not None
    labels = classifier.labels or list(config.branches)
    for label in labels:
        if label not in config.branches:
            builder.problem((*loc, "classifier", "labels"), f"the label '{label}' has no branch")
    for label in config.branches:
        if label not in labels:
            builder.problem((*loc, "branches", label), f"'{label}' is not a classifier label")
    prompt = (classifier.prompt or DEFAULT_PROMPT).replace("{labels}", ", ".join(labels))
    judge = Judge(
        builder.target(classifier.model, (*loc, "classifier", "model")),
        prompt,
        cache_size=classifier.cache_size,
        max_tokens=classifier.max_tokens,
    )
    return Classify(
        branches, otherwise, path, judge=judge, labels=labels, classifier=classifier.model
    )


POLICY = Policy(key="classify", config=ClassifyConfig, build=_build)
