"""The one place a finished request is recorded: Prometheus metrics and the stats report.

The gateway's ASGI middleware (`Edge`, app/edge.py) wraps every HTTP request. `Gateway.new_call`
hands it the request's `Call` (`track`), whatever dialect the request came in; when the response
has been sent, to the last byte of a stream, the middleware records the call once
(`Telemetry.record`): its status, latency,
time to first event, every attempt (`call.attempts`), and the answer's tokens and cost; and
keeps it for the console among the recent requests (app/recent.py) and on the traffic timeline
(app/timeline.py).

The tracing exporter's count of dropped spans is read into the metrics at each scrape.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.metrics import Metrics, breakers_of
from app.recent import PROMPT_CHARS, RecentRequests, RequestRecord
from app.routing import Answer, Attempt, Call
from app.stats import Sample, Stats
from app.timeline import Timeline

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger("llm_router")


@dataclass
class _Slot:
    call: Call | None = None


# Set by the middleware for the duration of one request; read by `track`.
_current: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar(
    "llm_router_request", default=None
)


def track(call: Call) -> None:
    """Mark `call` as the one the current HTTP request is serving (no-op outside a request)."""
    slot = _current.get()
    if slot is not None:
        slot.call = call


class Telemetry:
    """Metrics and stats of one app; `gateway()` is the one now serving (a reload swaps it)."""

    def __init__(self, gateway: Callable[[], Gateway]) -> None:
        self._gateway = gateway
        self.stats = Stats()
        self.recent = RecentRequests()
        self.timeline = Timeline()
        self.metrics = Metrics(lambda: breakers_of(self._gateway().routes.values()))
        self._spans_dropped_seen = 0

    def spans_dropped(self, count: int = 1) -> None:
        self.metrics.spans_dropped.inc(count)

    def observe_spans_dropped(self, total: int) -> None:
        """Bring the counter up to the span exporter's running total (read at each scrape)."""
        fresh = total - self._spans_dropped_seen
        if fresh > 0:
            self.spans_dropped(fresh)
            self._spans_dropped_seen = total

    @staticmethod
    def _route_label(name: str, gateway: Gateway) -> str:
        # A caller-chosen name must not mint new label values: known names only.
        known = name in gateway.routes or name in gateway.config.models
        return name if known else "(direct)"

    def record(self, call: Call, status: str, seconds: float, first_event_s: float | None) -> None:
        """Record one finished call. `status` is the HTTP status, or `stream_error`."""
        if call.dry_run:
            return
        m = self.metrics
        gateway = self._gateway()  # the one now serving, read once
        route = self._route_label(call.request.route, gateway)
        answer = call.answer
        served = answer.target if answer else call.serving
        if served is None and call.attempts:
            last = call.attempts[-1]
            provider, model = last.provider, last.model
        elif served is not None:
            provider, model = served.provider.name, served.model.model
        else:
            provider, model = "", ""
        child = m.child
        child(m.requests, route, provider, model, status).inc()
        child(m.request_seconds, route, provider, model).observe(seconds)
        if first_event_s is not None:
            child(m.first_token_seconds, route, provider, model).observe(first_event_s)

        previous: str | None = None
        switches = 0
        for attempt in call.attempts:
            if previous is not None and attempt.target != previous:
                switches += 1
            previous = attempt.target
            outcome = "ok" if attempt.ok else (attempt.error or "error")
            child(m.attempts, attempt.provider, attempt.model, outcome).inc()
            child(m.upstream_seconds, attempt.provider, attempt.model).observe(
                attempt.latency_ms / 1000
            )
            sample = Sample(attempt.provider, attempt.model, attempt.latency_ms, attempt.ok)
            if attempt.ok and answer is not None and _answered_by(answer, attempt):
                sample.input_tokens = answer.usage.input_tokens
                sample.output_tokens = answer.usage.output_tokens
                sample.cost_usd = answer.cost_usd
            self.stats.add(sample)
        if switches:
            child(m.failovers, route).inc(switches)
        if answer is not None:
            child(m.tokens, route, provider, model, "input").inc(answer.usage.input_tokens)
            child(m.tokens, route, provider, model, "output").inc(answer.usage.output_tokens)
            child(m.cost, route, provider, model).inc(answer.cost_usd)
        capture = gateway.config.tracing.capture_content
        self._keep(call, route, status, seconds, provider, model, capture)

    def _keep(
        self,
        call: Call,
        route: str,
        status: str,
        seconds: float,
        provider: str,
        model: str,
        capture: bool,
    ) -> None:
        """The call for the console: among the recent requests, and on the timeline."""
        answer = call.answer
        ok = status == "200"
        usage = answer.usage if answer else None
        record = RequestRecord(
            at=time.time(),
            route=route,
            status=status,
            ok=ok,
            latency_ms=seconds * 1000,
            target=answer.target.name if answer else None,
            provider=provider or None,
            model=model or None,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_usd=answer.cost_usd if answer else 0.0,
            trace_id=call.trace_id,
            streamed=call.request.stream,
            decisions=[d.as_dict() for d in call.decisions],
            attempts=[a.as_dict() for a in call.attempts],
            prompt=_prompt(call) if capture else None,
        )
        self.recent.add(record)
        self.timeline.add(
            record.latency_ms,
            ok,
            provider if answer else None,
            model,
            record.input_tokens + record.output_tokens,
            record.cost_usd,
        )


def _prompt(call: Call) -> str | None:
    """The start of the last user message."""
    for message in reversed(call.request.messages):
        if message.role == "user" and message.content:
            return message.content[:PROMPT_CHARS]
    return None


def _answered_by(answer: Answer, attempt: Attempt) -> bool:
    target = answer.target
    return target.name == attempt.target and target.provider.name == attempt.provider


def begin_request() -> tuple[_Slot, contextvars.Token[_Slot | None]]:
    """A slot for the call the HTTP request now starting will serve (filled by `track`), set
    for the request's duration; `end_request` with the token when its response has been sent."""
    slot = _Slot()
    return slot, _current.set(slot)


def end_request(token: contextvars.Token[_Slot | None]) -> None:
    _current.reset(token)
