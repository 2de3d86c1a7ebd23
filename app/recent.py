"""The last few hundred requests, for the console: what each was routed to, and how it went.

A ring buffer of fixed size: memory is bounded whatever the traffic. Each entry keeps the
request's route, the target that answered, the decisions on the way, every attempt, latency,
tokens, cost and trace id; the prompt only when tracing may capture content
(`tracing.capture_content`), and then only its first characters.

The same entries give each routing node its live share of its route's traffic and its error
rate (`node_traffic`): a node's share is the fraction of the route's recent requests that
reached it; its error rate, for a policy node, the fraction of those that failed in the end,
and for a target, the fraction whose every attempt at that target failed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

PROMPT_CHARS = 200  # of the last user message, when content may be captured


@dataclass
class RequestRecord:
    at: float  # wall-clock seconds
    route: str
    status: str  # the HTTP status, or stream_error
    ok: bool
    latency_ms: float
    target: str | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    trace_id: str | None = None
    streamed: bool = False
    decisions: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    prompt: str | None = None  # only with tracing.capture_content

    @property
    def outcome(self) -> str:
        return "ok" if self.ok else "error"

    def visited(self) -> dict[str, bool]:
        """Every node path this request reached, and whether it went well there."""
        nodes: dict[str, bool] = {}
        for decision in self.decisions:
            at = decision.get("at")
            if at:
                nodes[at] = self.ok
        for attempt in self.attempts:
            name = attempt["target"]  # a target's path is its name
            nodes[name] = nodes.get(name, False) or bool(attempt.get("ok"))
        return nodes

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.at))
            + f".{int(self.at * 1000) % 1000:03d}Z",
            "route": self.route,
            "status": self.status,
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 1),
            "target": self.target,
            "provider": self.provider,
            "model": self.model,
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "cost_usd": round(self.cost_usd, 10),
            "trace_id": self.trace_id,
            "streamed": self.streamed,
            "decisions": self.decisions,
            "attempts": self.attempts,
            "prompt": self.prompt,
        }


class RecentRequests:
    """A bounded buffer of the latest requests, newest last. One per app; no locks needed."""

    def __init__(self, size: int = 500, clock: Callable[[], float] = time.time) -> None:
        self._entries: deque[RequestRecord] = deque(maxlen=size)
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, record: RequestRecord) -> None:
        self._entries.append(record)

    def latest(
        self,
        *,
        limit: int = 300,
        route: str | None = None,
        provider: str | None = None,
        outcome: str | None = None,
    ) -> list[RequestRecord]:
        """Newest first, filtered; a provider matches the one that answered or any attempted."""
        found: list[RequestRecord] = []
        for record in reversed(self._entries):
            if len(found) >= limit:
                break
            if route and record.route != route:
                continue
            if outcome and record.outcome != outcome:
                continue
            if provider and provider not in _providers(record):
                continue
            found.append(record)
        return found

    def facets(self) -> dict[str, list[str]]:
        """The routes and providers present, for the console's filters."""
        routes: set[str] = set()
        providers: set[str] = set()
        for record in self._entries:
            routes.add(record.route)
            providers.update(_providers(record))
        return {"routes": sorted(routes), "providers": sorted(providers)}

    def node_traffic(self, window_s: float = 300.0) -> dict[str, dict[str, Any]]:
        """Per route: its recent requests, and per node path reached: requests, share of the
        route's, errors, error rate."""
        cutoff = self._clock() - window_s
        totals: dict[str, int] = {}
        counts: dict[str, dict[str, list[int]]] = {}  # route -> path -> [requests, errors]
        for record in self._entries:
            if record.at < cutoff:
                continue
            totals[record.route] = totals.get(record.route, 0) + 1
            per_route = counts.setdefault(record.route, {})
            for path, ok in record.visited().items():
                seen = per_route.setdefault(path, [0, 0])
                seen[0] += 1
                seen[1] += not ok
        return {
            route: {
                "requests": totals[route],
                "nodes": {
                    path: {
                        "requests": n,
                        "share": round(n / totals[route], 4),
                        "errors": errors,
                        "error_rate": round(errors / n, 4),
                    }
                    for path, (n, errors) in per_route.items()
                },
            }
            for route, per_route in counts.items()
        }


def _providers(record: RequestRecord) -> Iterable[str]:
    names = {a["provider"] for a in record.attempts}
    if record.provider:
        names.add(record.provider)
    return names
