"""Explain a request: the path it would take through its route, and why, calling no final target.

`explain` runs the request as a dry run (SPEC `dry_run: true`), so every policy decides as it
would for real; an LLM classifier or scorer is still asked, since its answer decides the path,
and the explanation says so. `render` turns the result into the text `llm-router explain` prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.chat import ChatRequest
from app.errors import NotFound, ProviderError, RouterError
from app.gateway import Gateway
from routers.errors import upstream_failure


@dataclass
class Explanation:
    route: str
    decisions: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] | None = None  # name, provider, model, estimated_cost_usd
    models_called: list[str] = field(default_factory=list)  # classifier / scorer models asked
    error: dict[str, Any] | None = None  # SPEC's error body, when the request would fail

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "decisions": self.decisions,
            "target": self.target,
            "models_called": self.models_called,
            "error": self.error,
        }


async def explain(
    gateway: Gateway, request: ChatRequest, headers: Mapping[str, str] | None = None
) -> Explanation:
    request = request.model_copy(update={"dry_run": True, "stream": False})
    result = Explanation(request.route)
    node = gateway.node_for(request.route)
    if node is None:
        result.error = NotFound(f"unknown route or model '{request.route}'").body()["error"]
        return result
    call = gateway.new_call(request, headers)
    try:
        await node.complete(call)
    except ProviderError as error:
        result.error = upstream_failure(error, call).body()["error"]
    except RouterError as error:
        result.error = error.body()["error"]
    result.decisions = [d.as_dict() for d in call.decisions]
    for decision in call.decisions:
        for key in ("classifier", "scorer"):
            name = decision.detail.get(key)
            if decision.detail.get("model_called") and name and name not in result.models_called:
                result.models_called.append(name)
    if call.answer is not None:
        target = call.answer.target
        result.target = {
            "name": target.name,
            "provider": target.provider.name,
            "model": target.model.model,
            "estimated_cost_usd": round(call.estimated_cost_usd(target), 8),
        }
    return result


# ---- text ---------------------------------------------------------------------------------------


def _usd(value: float) -> str:
    return f"${value:.6f}"


def _quote(text: Any) -> str:
    return json.dumps(text, ensure_ascii=False)


def _why(policy: str, detail: dict[str, Any]) -> str:
    """One line saying why a policy decided as it did."""
    if policy == "classify":
        if detail.get("by") == "rules":
            if detail.get("label") is None:
                return "no rule matched"
            return f"rule {_quote(detail['rule'])} matched {_quote(detail['matched'])}"
        asked = "cached answer of" if detail.get("cached") else "asked"
        if detail.get("error"):
            return f"{asked} classifier {detail['classifier']}: failed ({detail['error']})"
        label = detail.get("label") or "no label (unparseable)"
        return f"{asked} classifier {detail['classifier']}: {_quote(detail['raw'])} → {label}"
    if policy == "cost_threshold":
        score, threshold = detail["score"], detail["threshold"]
        line = f"complexity {score} {'≥' if score >= threshold else '<'} threshold {threshold}"
        line += f" (scorer {detail['scorer']}"
        if "raw" in detail:
            line += f", answered {_quote(detail['raw'])}"
        if detail.get("unparsed") or detail.get("error"):
            line += ", unreadable: counted 0.5"
        costs = detail.get("estimated_cost_usd", {})
        line += f"); estimated cost below {_usd(costs.get('below', 0))}"
        line += f", above {_usd(costs.get('above', 0))}"
        if "over_budget" in detail:
            line += f"; '{detail['over_budget']}' is over budget"
        return line
    if policy == "ab_split":
        how = f"sticky on {detail['sticky']}" if detail.get("sticky") else "random"
        line = f"variant {detail['variant']} ({detail['split_ratio']:.0%} of traffic), {how}"
        if "over_budget" in detail:
            line += f"; variant {detail['over_budget']} is over budget"
        return line
    if policy == "match":
        when = detail.get("when")
        if when is None:
            return "no rule applies and there is no default"
        return "the default rule" if when == "default" else f"rule {detail['rule']}: {when}"
    if policy == "budget":
        return (
            f"{detail['target']} would cost about {_usd(detail['estimated_cost_usd'])}, "
            f"over max_cost_usd {detail['max_cost_usd']}"
        )
    if policy == "failover":
        tried = [a.get("target") for a in detail.get("attempts", []) if isinstance(a, dict)]
        skipped = [a for a in detail.get("attempts", []) if isinstance(a, dict) and "skipped" in a]
        if skipped:
            return "skipped " + ", ".join(f"{a['target']} ({a['skipped']})" for a in skipped)
        return "the first in its chain" if not tried else f"tried {', '.join(map(str, tried))}"
    return ", ".join(f"{k}={_quote(v)}" for k, v in detail.items())


def render(result: Explanation) -> str:
    lines = [f"route {result.route} (dry run: the final target is not called)"]
    for number, decision in enumerate(result.decisions, 1):
        lines.append(
            f"  {number}. {decision['policy']} at {decision['at']} → {decision['outcome']}"
        )
        lines.append(f"       {_why(decision['policy'], decision['detail'])}")
    if result.target is not None:
        t = result.target
        lines.append(
            f"target: {t['name']} ({t['provider']} {t['model']}), "
            f"estimated {_usd(t['estimated_cost_usd'])} for this request"
        )
    if result.error is not None:
        lines.append(
            f"error: {result.error['type']} ({result.error['code']}): {result.error['message']}"
        )
    for model in result.models_called:
        lines.append(f"note: the model {model} was called to decide the path")
    return "\n".join(lines)
