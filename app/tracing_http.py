"""The server span of each API request, as plain ASGI middleware.

Our own middleware rather than OpenTelemetry's ASGI instrumentation: it costs one span per request
(the ASGI instrumentation adds one per message sent and received), and it sets up what the
gateway needs: the caller's W3C `traceparent` honoured, the HoneyHive session chosen
(`x-session-id`, else one per request), and `x-trace-id` on every response, errors included.
Health probes and metrics scrapes are not traced.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.honeyhive import EVENT_TYPE, SESSION_HEADER, Session, with_session
from app.spans import SPAN_KIND, RouteTracer

_PROPAGATOR = TraceContextTextMapPropagator()
# The request headers the span reads: W3C trace context, and the HoneyHive session.
_READ_HEADERS = frozenset(name.encode("latin-1") for name in (*_PROPAGATOR.fields, SESSION_HEADER))
TRACED_PREFIXES = ("/v1/", "/admin/")


class RequestSpans:
    def __init__(self, app: ASGIApp, tracer: Callable[[], RouteTracer | None]) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracer()
        path = scope.get("path", "")
        if scope["type"] != "http" or tracer is None or not path.startswith(TRACED_PREFIXES):
            await self.app(scope, receive, send)
            return
        # Only the headers read here are decoded (the last of a repeated one, as a dict keeps).
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in _READ_HEADERS
        }
        parent = _PROPAGATOR.extract(headers)
        given = headers.get(SESSION_HEADER, "").strip()
        method = scope.get("method", "GET")
        recording = tracer.recording
        if recording:
            session = Session(given[:256], from_caller=True) if given else Session.new()
            ctx = with_session(session, parent)
            attributes = {
                SPAN_KIND: "CHAIN",
                EVENT_TYPE: "chain",
                "http.request.method": method,
                "url.path": path,
                "router.session.from_caller": bool(given),
            }
            span = tracer.start_span(f"{method} {path}", attributes, ctx, SpanKind.SERVER)
        else:  # the span is made for its ids: no session (read only by spans that record)
            ctx = parent
            span = tracer.tracer.start_span(f"{method} {path}", context=ctx, kind=SpanKind.SERVER)
        trace_id = format(span.get_span_context().trace_id, "032x").encode()

        async def send_with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if recording:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                names = {name.lower() for name, _ in message.get("headers", ())}
                if b"x-trace-id" not in names:
                    message["headers"] = [*message.get("headers", ()), (b"x-trace-id", trace_id)]
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span, ctx))
        try:
            await self.app(scope, receive, send_with_trace_id)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end()
