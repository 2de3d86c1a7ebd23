"""`Edge`: the gateway's one ASGI middleware around every HTTP request.

It does, in this order from the outside in, what three middlewares did as three layers:

1. the request's server span (app/tracing_http.py): `/v1/` and `/admin/` requests, the caller's
   `traceparent` and HoneyHive session honoured, `x-trace-id` on the response;
2. the request's record (app/telemetry.py): the response timed, then the call recorded once it
   has been sent, to the last byte of a stream;
3. its life (app/lifecycle.py): refused while draining, pinned to the gateway serving when it
   arrived and counted in flight, held to that gateway's header and body limits (app/limits.py).

As one layer a request costs one coroutine and one wrapped `send` here instead of three of each
(every response message went through three wrappers), and the response's headers are read in
one pass for the record and the span. What each part sees and does is as before: the span's
part of `send` runs after the record's (it was the outer layer), the record is made inside the
span's context, and the in-flight count is left before either.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ServiceUnavailable
from app.lifecycle import ALWAYS, PIN, InFlight
from app.limits import headers_too_large, limit_body, measure, send_error
from app.telemetry import Telemetry, begin_request, end_request
from app.tracing_http import TRACED_PREFIXES, ServerSpan

if TYPE_CHECKING:
    from app.gateway import Gateway
    from app.routing import Call

log = logging.getLogger("llm_router")


class Edge:
    """Spans, records, drains, pins and limits each HTTP request (ASGI middleware)."""

    def __init__(self, app: ASGIApp, state: State, telemetry: Telemetry) -> None:
        self.app = app
        self.state = state
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        gateway: Gateway = state.gateway
        tracer = gateway.tracer
        path = scope["path"]
        headers = scope["headers"]
        span = None
        if tracer is not None and path.startswith(TRACED_PREFIXES):
            span = ServerSpan(tracer, scope, headers)
        started = time.perf_counter()
        slot, token = begin_request()
        status = 500
        streaming = False
        first_event: float | None = None

        async def edge_send(message: Message) -> None:
            nonlocal status, streaming, first_event
            if message["type"] == "http.response.start":
                status = message["status"]
                has_trace_id = False
                for name, value in message.get("headers", ()):
                    lower = name.lower()
                    if lower == b"content-type":
                        streaming = value.startswith(b"text/event-stream")
                    elif lower == b"x-trace-id":
                        has_trace_id = True
                if span is not None:
                    span.respond(message, status, has_trace_id)
            elif streaming and first_event is None and message.get("body"):
                first_event = time.perf_counter() - started
            await send(message)

        context_token = span.attach() if span is not None else None
        try:
            if state.draining and path not in ALWAYS:
                await send_error(edge_send, _draining())
                return
            # The gateway read for the span: the same one, as no await has passed since.
            scope[PIN] = gateway
            inflight: InFlight = state.inflight
            inflight.enter(gateway)
            try:
                server = gateway.config.server
                size, declared = measure(headers)
                if size > server.max_header_bytes:
                    await send_error(edge_send, headers_too_large(server.max_header_bytes))
                    return
                limit = server.max_body_bytes
                if declared is not None and declared <= limit:  # held to it by the server
                    await self.app(scope, receive, edge_send)
                else:
                    await limit_body(self.app, scope, receive, edge_send, limit, declared)
            finally:
                inflight.leave(gateway)
        except BaseException as exc:
            if span is not None:
                span.failed(exc)
            raise
        finally:
            end_request(token)
            self._record(slot.call, status, streaming, started, first_event)
            if span is not None:
                otel_context.detach(context_token)
                span.end()

    def _record(
        self,
        call: Call | None,
        status: int,
        streaming: bool,
        started: float,
        first_event: float | None,
    ) -> None:
        """The request's call, once its response has been sent (none: nothing to record)."""
        if call is None:
            return
        label = str(status)
        if streaming and status == 200 and call.answer is None:
            label = "stream_error"
        try:
            self.telemetry.record(call, label, time.perf_counter() - started, first_event)
        except Exception as exc:  # the caller has its answer; never fail it afterwards
            log.error("recording a request failed: %s", type(exc).__name__)


def _draining() -> ServiceUnavailable:
    return ServiceUnavailable("the gateway is shutting down", code="draining", retry_after=1)
