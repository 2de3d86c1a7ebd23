"""The route and each policy node evaluated, as spans (attempts: app/attempts.py).

Policies stay free of tracing: the tree compiler wraps each policy node in `TracedPolicy`, which
reads the decision the node recorded on the call. A policy may add its own attributes through an
optional `span_attributes(decision)` method, or by recording dotted detail keys
(`query.complexity_score`), which are exported under their own names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from app.chat import Completion, StreamEvent
from app.honeyhive import SESSION_ID, TL_SESSION_ID, session_of
from app.routing import Call, Decision, Node, Target
from app.spans import (
    CANDIDATES,
    CHAIN,
    COST,
    DECISION,
    HOPS,
    INPUT_TOKENS,
    MODEL,
    OUTCOME,
    OUTPUT_TOKENS,
    PATH,
    POLICY,
    PROVIDER,
    REASON,
    ROUTE,
    TARGETS,
    RouteTracer,
    attach,
    detach,
    ended,
    scalar,
    spanned,
)

# ---- the route ----------------------------------------------------------------------------------


class _NamedRoute(Node):
    """The route a caller named (a route, an alias or `provider/model-id`) around its tree: it
    shows as its tree does; subclasses say what the call gets on the way in."""

    def __init__(self, name: str, inner: Node) -> None:
        self.name = name
        self.inner = inner
        self.path = inner.path

    @property
    def label(self) -> str:
        return self.inner.label

    def children(self) -> list[Node]:
        return [self.inner]

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def targets(self) -> list[Target]:
        return self.inner.targets()


class TracedRoute(_NamedRoute):
    """The route a caller named, as one span."""

    def _start(self, call: Call, tracer: RouteTracer) -> Span:
        request = call.request
        metadata = request.metadata
        session = session_of()
        given = metadata.get("session_id")
        if session is not None and not session.from_caller and given:
            session.id, session.from_caller = str(given), True
            parent = trace.get_current_span()  # the request's span, stamped before the body
            parent.set_attributes({SESSION_ID: session.id, TL_SESSION_ID: session.id})
        attributes: dict[str, Any] = {
            **CHAIN,
            ROUTE: self.name,
            TARGETS: [t.name for t in self.inner.targets()],
            "router.stream": request.stream,
            "router.dry_run": request.dry_run,
        }
        if request.user:
            attributes["user.id"] = request.user
        for key, value in metadata.items():
            if scalar(value):
                attributes[f"router.metadata.{key}"] = value
        span = tracer.start_span(f"route {self.name}", attributes)
        call.trace_id = format(span.get_span_context().trace_id, "032x")
        return span

    def _finish(self, span: Span, call: Call, exc: BaseException | None) -> None:
        answer = call.answer
        attributes: dict[str, Any] = {
            HOPS: len(call.attempts),
            REASON: " > ".join(f"{d.policy}:{d.outcome}" for d in call.decisions) or "direct",
        }
        if answer is not None and exc is None:
            attributes |= {
                DECISION: answer.target.name,
                MODEL: answer.model,
                PROVIDER: answer.target.provider.name,
                COST: answer.cost_usd,
                INPUT_TOKENS: answer.usage.input_tokens,
                OUTPUT_TOKENS: answer.usage.output_tokens,
            }
        else:
            attributes[DECISION] = "none"
        span.set_attributes(attributes)
        ended(span, exc)
        span.end()

    async def complete(self, call: Call) -> Completion:
        tracer = call.tracer
        if tracer is None:
            return await self.inner.complete(call)
        span = self._start(call, tracer)
        error: BaseException | None = None
        token = attach(span)
        try:
            return await self.inner.complete(call)
        except BaseException as exc:
            error = exc
            raise
        finally:
            detach(token)
            self._finish(span, call, error)

    def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        tracer = call.tracer
        if tracer is None:
            return self.inner.stream(call)
        return spanned(
            lambda: self._start(call, tracer),
            lambda: self.inner.stream(call),
            lambda span, error: self._finish(span, call, error),
        )


class TraceIdRoute(_NamedRoute):
    """The route a caller named, where spans record nothing (exporter `none`): no hop spans,
    whose attributes would be built for nothing, only the call's trace id, read when the route
    starts as `TracedRoute` reads it: the request's trace (its server span's), else a new one."""

    def __init__(self, name: str, inner: Node, tracer: RouteTracer) -> None:
        super().__init__(name, inner)
        self._tracer = tracer

    def _identify(self, call: Call) -> None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:  # outside any request's span: the route's own trace
            context = self._tracer.tracer.start_span(f"route {self.name}").get_span_context()
        call.trace_id = format(context.trace_id, "032x")

    async def complete(self, call: Call) -> Completion:
        self._identify(call)
        return await self.inner.complete(call)

    def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        self._identify(call)
        return self.inner.stream(call)


# ---- policy nodes ---------------------------------------------------------------------------


class TracedPolicy(Node):
    """A policy node as one span; inserted by the tree compiler around every policy node."""

    def __init__(self, key: str, inner: Node) -> None:
        self.key = key
        self.inner = inner
        self.path = inner.path

    def __getattr__(self, name: str) -> Any:  # the policy's own fields (chain, breakers, …)
        return getattr(self.inner, name)

    @property
    def label(self) -> str:
        return self.inner.label

    def children(self) -> list[Node]:
        return self.inner.children()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def targets(self) -> list[Target]:
        return self.inner.targets()

    def _start(self, tracer: RouteTracer) -> Span:
        attributes = {
            **CHAIN,
            POLICY: self.key,
            PATH: self.path,
            CANDIDATES: [child.label for child in self.inner.children()],
        }
        return tracer.start_span(f"policy {self.key}", attributes)

    def _finish(self, span: Span, call: Call, first: int, exc: BaseException | None) -> None:
        decision = next(
            (d for d in reversed(call.decisions[first:]) if d.at == self.path),
            None,
        )
        if decision is not None:
            span.set_attributes(self._decision_attributes(decision))
        ended(span, exc)
        span.end()

    def _decision_attributes(self, decision: Decision) -> dict[str, Any]:
        attributes: dict[str, Any] = {OUTCOME: decision.outcome, DECISION: decision.outcome}
        for key, value in decision.detail.items():
            if scalar(value):
                attributes[key if "." in key else f"router.detail.{key}"] = value
            elif isinstance(value, list):
                attributes[f"router.detail.{key}.count"] = len(value)
        own = getattr(self.inner, "span_attributes", None)
        if callable(own):
            attributes |= {k: v for k, v in own(decision).items() if v is not None}
        return attributes

    async def complete(self, call: Call) -> Completion:
        tracer = call.tracer
        if tracer is None:
            return await self.inner.complete(call)
        span = self._start(tracer)
        first = len(call.decisions)
        error: BaseException | None = None
        token = attach(span)
        try:
            return await self.inner.complete(call)
        except BaseException as exc:
            error = exc
            raise
        finally:
            detach(token)
            self._finish(span, call, first, error)

    def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        tracer = call.tracer
        if tracer is None:
            return self.inner.stream(call)
        first = len(call.decisions)
        return spanned(
            lambda: self._start(tracer),
            lambda: self.inner.stream(call),
            lambda span, error: self._finish(span, call, first, error),
        )


def traced_policy(key: str, node: Node) -> Node:
    return TracedPolicy(key, node)
