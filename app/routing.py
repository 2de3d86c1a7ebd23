"""The routing tree: one interface for every node, provider targets at the leaves.

A route is the root of a tree of `Node`s. A policy node (`policies/`) chooses among, or tries in
turn, its child nodes; a `Target` calls one model through its provider. Every node answers the
same two calls, `complete` and `stream`, with a `Call` that carries the request and collects the
decision trail and the attempts on the way down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.attempts import attempt_span
from app.chat import (
    AssistantMessage,
    ChatRequest,
    Completion,
    StreamEvent,
    StreamFinish,
    Usage,
)
from app.errors import ErrorKind, ProviderError
from app.spans import RouteTracer
from app.steps import WAITING, Resumed, first_step
from providers.base import ModelConfig, Provider, estimate_input_tokens
from providers.prices import list_price

log = logging.getLogger("llm_router")

# Output tokens a budget estimate assumes when neither the request nor the alias sets max_tokens.
ASSUMED_OUTPUT_TOKENS = 256

# ---- what a request collects on its way through the tree --------------------------------


@dataclass
class Decision:
    policy: str
    at: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        # Attempts are kept as objects until now: a stream's attempt is completed after the
        # decision that chose it was recorded.
        detail = {
            key: [v.as_dict() if isinstance(v, Attempt) else v for v in value]
            if isinstance(value, list)
            else value
            for key, value in self.detail.items()
        }
        return {"policy": self.policy, "at": self.at, "outcome": self.outcome, "detail": detail}


@dataclass
class Attempt:
    target: str
    provider: str
    model: str
    ok: bool
    latency_ms: float
    error: str | None = None
    status: int | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "provider": self.provider,
            "model": self.model,
        }
        if self.ok:
            out["ok"] = True
        else:
            out["error"] = self.error
            if self.status is not None:
                out["status"] = self.status
            if self.message:
                out["message"] = self.message
        out["latency_ms"] = round(self.latency_ms, 1)
        return out


@dataclass
class Answer:
    """Who answered a call, filled in by the `Target` that succeeded."""

    target: Target
    model: str  # the model id the provider reports
    usage: Usage
    cost_usd: float


@dataclass(frozen=True)
class StreamLimits:
    """How long a stream may keep the caller waiting, set by a policy for the targets below it
    (`failover: {first_token_timeout_s, idle_timeout_s}`); None: the model alias decides."""

    first_token_s: float | None = None  # from the call to the first event: else move on
    idle_s: float | None = None  # between one event and the next: a stall


class Call:
    """One request's journey: the request, its context, and what the tree decided and tried."""

    def __init__(
        self,
        request: ChatRequest,
        *,
        headers: Mapping[str, str] | None = None,
        env: str = "development",
        deadline: float | None = None,
    ) -> None:
        self.request = request
        self.headers = headers or {}
        self.env = env
        self.deadline = deadline  # time.monotonic() by which the whole call must end
        self.decisions: list[Decision] = []
        self.attempts: list[Attempt] = []
        self.notes: list[str] = []
        self.answer: Answer | None = None
        self.serving: Target | None = None  # the target whose answer the caller is getting
        self.output_started = False  # a delta has reached the caller: no more failover
        self.stream_limits = StreamLimits()
        self._input_tokens: int | None = None  # estimated once, for budgets
        self.tracer: RouteTracer | None = None  # set by the gateway: the call's hops become spans
        self.trace_id: str | None = None  # set when the route's span starts

    @property
    def dry_run(self) -> bool:
        return self.request.dry_run

    def decide(self, policy: str, at: str, outcome: str, **detail: Any) -> Decision:
        decision = Decision(policy, at, outcome, detail)
        self.decisions.append(decision)
        return decision

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    # -- the per-request budget (`max_cost_usd`) ---------------------------------------------

    def estimated_cost_usd(self, target: Target) -> float:
        """What `target` would cost for this request: input estimated from the messages, output
        from max_tokens (the request's, else the alias's, else ASSUMED_OUTPUT_TOKENS)."""
        if self._input_tokens is None:
            self._input_tokens = estimate_input_tokens(self.request.messages, self.request.tools)
        output = self.request.max_tokens or target.model.max_tokens or ASSUMED_OUTPUT_TOKENS
        return target.model.cost_usd(self._input_tokens, output)

    def within_budget(self, node: Node) -> bool:
        """True without a budget; for a target, whether its estimate fits; for a policy node,
        whether at least one target below it fits."""
        budget = self.request.max_cost_usd
        if budget is None:
            return True
        return any(self.estimated_cost_usd(t) <= budget for t in node.targets())


# ---- the node interface ----------------------------------------------------------------


class Node(ABC):
    """Anything a route can point at; `path` says where it was declared (routes.a.failover.0)."""

    path: str

    @property
    @abstractmethod
    def label(self) -> str:
        """A short name for decisions: the alias, route name or policy kind."""

    @abstractmethod
    async def complete(self, call: Call) -> Completion:
        """Answer the call once; raise `ProviderError` when this node cannot."""

    @abstractmethod
    def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        """Yield deltas then one `StreamFinish`; raise `ProviderError` when this node cannot."""

    def children(self) -> list[Node]:
        return []

    def describe(self) -> dict[str, Any]:
        """A JSON-able picture of the subtree, for explain and the console."""
        return {"label": self.label, "path": self.path}

    def targets(self) -> list[Target]:
        """Every target reachable below this node, in declaration order."""
        found: list[Target] = []
        for child in self.children():
            for target in child.targets():
                if target not in found:
                    found.append(target)
        return found


class RouteRef(Node):
    """A route used by name inside another tree: delegates to that route's root."""

    def __init__(self, name: str, path: str, resolve: Callable[[], Node]) -> None:
        self.name = name
        self.path = path
        self._resolve = resolve

    @property
    def label(self) -> str:
        return self.name

    @property
    def root(self) -> Node:
        return self._resolve()

    async def complete(self, call: Call) -> Completion:
        return await self.root.complete(call)

    def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        return self.root.stream(call)

    def children(self) -> list[Node]:
        return [self.root]

    def describe(self) -> dict[str, Any]:
        return {"label": self.name, "path": self.path, "route": self.name}


class Target(Node):
    """One model on one provider: the leaf that makes the upstream call and records the attempt."""

    def __init__(self, name: str, provider: Provider, model: ModelConfig, path: str = "") -> None:
        self.name = name
        self.provider = provider
        self.model = model
        self.path = path or name

    @property
    def label(self) -> str:
        return self.name

    def targets(self) -> list[Target]:
        return [self]

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.name,
            "path": self.path,
            "target": self.name,
            "provider": self.provider.name,
            "model": self.model.model,
        }

    def cost_usd(self, usage: Usage, answered_model: str | None = None) -> float:
        """Billed at the alias's price; an alias with none (an Azure deployment named freely)
        at the bundled price of the model the provider says answered, when it is listed."""
        model = self.model
        if answered_model and None in (model.input_price, model.output_price):
            listed = list_price(answered_model)
            if listed is not None:
                given = (model.input_price, model.output_price)
                price_in, price_out = (
                    g if g is not None else p for g, p in zip(given, listed, strict=True)
                )
                model = model.model_copy(
                    update={"input_price": price_in, "output_price": price_out}
                )
        return model.cost_usd(usage.input_tokens, usage.output_tokens)

    def _limit(self, call: Call, seconds: float, *, said: bool = True) -> tuple[float, str]:
        """`seconds`, or less when the request's deadline comes first; with what bounds it
        (unless not `said`: a stream asks for every event, and words it only on a timeout)."""
        remaining = call.remaining_s()
        if remaining is not None and remaining < seconds:
            if remaining <= 0:
                raise ProviderError(
                    ErrorKind.TIMEOUT,
                    "the request deadline passed",
                    provider=self.provider.name,
                    model=self.model.model,
                )
            return remaining, "before the request deadline"
        return seconds, f"within {seconds:g}s" if said else ""

    def _stream_limits(self, call: Call) -> tuple[float, float]:
        """(first event, between events): the policy's setting, else the alias's, at most
        the alias's `timeout_s`."""
        ceiling = self.model.timeout_s
        first = call.stream_limits.first_token_s or self.model.first_token_timeout_s or ceiling
        idle = call.stream_limits.idle_s or self.model.idle_timeout_s or ceiling
        return min(first, ceiling), min(idle, ceiling)

    def _unexpected(self, exc: Exception) -> ProviderError:
        # An adapter let something other than ProviderError escape (a network error mid-body,
        # a parsing bug): it is still this upstream failing, and failover must see it as such.
        log.warning(
            "provider %s raised %s; treated as a server error", self.provider.name, type(exc)
        )
        return ProviderError(
            ErrorKind.SERVER_ERROR,
            f"the provider call failed ({type(exc).__name__})",
            provider=self.provider.name,
            model=self.model.model,
        )

    def _record(self, call: Call, started: float, error: ProviderError | None = None) -> Attempt:
        latency_ms = (time.perf_counter() - started) * 1000
        attempt = Attempt(
            target=self.name,
            provider=self.provider.name,
            model=self.model.model,
            ok=error is None,
            latency_ms=latency_ms,
            error=error.kind.value if error else None,
            status=error.status if error else None,
            message=error.message if error else None,
        )
        call.attempts.append(attempt)
        return attempt

    def _check_budget(self, call: Call) -> None:
        """Refuse before calling when the estimate exceeds the request's budget; a policy that
        chooses among targets moves on, and when none fits the caller gets 402."""
        if call.within_budget(self):
            return
        estimate = call.estimated_cost_usd(self)
        budget = call.request.max_cost_usd
        call.decide(
            "budget",
            self.path,
            "over_budget",
            target=self.name,
            estimated_cost_usd=round(estimate, 8),
            max_cost_usd=budget,
        )
        raise ProviderError(
            ErrorKind.BUDGET_EXCEEDED,
            f"'{self.name}' would cost about ${estimate:.6f}, over the budget of ${budget:g}",
            provider=self.provider.name,
            model=self.model.model,
        )

    def _answered(self, call: Call, model: str, usage: Usage) -> None:
        call.serving = self
        call.answer = Answer(self, model or self.model.model, usage, self.cost_usd(usage, model))

    async def complete(self, call: Call) -> Completion:
        self._check_budget(call)
        if call.dry_run:
            self._answered(call, self.model.model, Usage())
            return Completion(message=AssistantMessage(), usage=Usage(), model=self.model.model)
        started = time.perf_counter()
        try:
            timeout, bound = self._limit(call, self.model.timeout_s)
            async with asyncio.timeout(timeout):
                upstream = self.provider.complete(self.model, call.request)
                completion = await attempt_span(call, self).run(upstream, timeout)
        except TimeoutError:
            error = ProviderError(
                ErrorKind.TIMEOUT,
                f"no answer {bound}",
                provider=self.provider.name,
                model=self.model.model,
            )
            self._record(call, started, error)
            raise error from None
        except ProviderError as error:
            self._record(call, started, error)
            raise
        except Exception as exc:
            error = self._unexpected(exc)
            self._record(call, started, error)
            raise error from None
        self._record(call, started)
        self._answered(call, completion.model, completion.usage)
        call.notes.extend(completion.notes)
        return completion

    async def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        self._check_budget(call)
        started = time.perf_counter()
        first_token_s, idle_s = self._stream_limits(call)
        events = self.provider.stream(self.model, call.request)
        # The span tells a timeout from a caller who left by how long the wait lasted.
        events = attempt_span(call, self).events(events, min(first_token_s, idle_s))
        attempt: Attempt | None = None  # recorded at the first event, completed at the end
        try:
            while True:
                # The first event must come within the time-to-first-token limit (else the
                # failover above moves on); every later one within the idle limit (a stall).
                allowed = first_token_s if attempt is None else idle_s
                limit, _ = self._limit(call, allowed, said=False)
                try:
                    # An event already at hand (the rest of a read the provider parsed) comes
                    # without waiting: no timer is armed for it, as none could fire before it
                    # came. Only a wait for the network is timed.
                    event, step, pending = first_step(events)
                    if event is WAITING:
                        async with asyncio.timeout(limit):
                            event = await Resumed(step, pending)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    bound = "before the request deadline"
                    if limit >= allowed:
                        bound = f"within {allowed:g}s"
                    silence = (
                        f"no first token {bound}"
                        if attempt is None
                        else f"the stream stalled: no chunk {bound}"
                    )
                    raise ProviderError(
                        ErrorKind.TIMEOUT,
                        silence,
                        provider=self.provider.name,
                        model=self.model.model,
                    ) from None
                except ProviderError:
                    raise
                except Exception as exc:
                    raise self._unexpected(exc) from None
                if attempt is None:
                    attempt = self._record(call, started)
                if isinstance(event, StreamFinish):
                    attempt.latency_ms = (time.perf_counter() - started) * 1000
                    self._answered(call, event.model, event.usage)
                    call.notes.extend(event.notes)
                elif not call.output_started:
                    call.output_started = True
                    call.serving = self
                yield event
        except ProviderError as error:
            if attempt is None:
                self._record(call, started, error)
            else:  # failed mid-stream: the attempt that looked good is not
                attempt.ok = False
                attempt.error = error.kind.value
                attempt.status = error.status
                attempt.message = error.message
                attempt.latency_ms = (time.perf_counter() - started) * 1000
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
