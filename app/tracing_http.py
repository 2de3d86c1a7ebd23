"""The server span of each API request, started by the gateway's ASGI middleware (app/edge.py).

Our own span rather than OpenTelemetry's ASGI instrumentation: it costs one span per request
(the ASGI instrumentation adds one per message sent and received), and it sets up what the
gateway needs: the caller's W3C `traceparent` honoured, the HoneyHive session chosen
(`x-session-id`, else one per request), and `x-trace-id` on every response, errors included.
Health probes and metrics scrapes are not traced.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Message, Scope

from app.honeyhive import EVENT_TYPE, SESSION_HEADER, Session, with_session
from app.spans import SPAN_KIND, RouteTracer

_PROPAGATOR = TraceContextTextMapPropagator()
# The request headers the span reads: W3C trace context, and the HoneyHive session.
_READ_HEADERS = frozenset(name.encode("latin-1") for name in (*_PROPAGATOR.fields, SESSION_HEADER))
TRACED_PREFIXES = ("/v1/", "/admin/")


class ServerSpan:
    """The server span of one traced request, started as the request arrives.

    Only the headers read here are decoded (the last of a repeated one, as a dict keeps). A span
    that records (an exporter is set) carries the HoneyHive session and the request's method
    and path; one that does not is made for its trace id alone."""

    __slots__ = ("context", "recording", "span", "trace_id")

    def __init__(self, tracer: RouteTracer, scope: Scope, headers: list[tuple[bytes, bytes]]):
        read = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _READ_HEADERS}
        parent = _PROPAGATOR.extract(read)
        given = read.get(SESSION_HEADER, "").strip()
        method = scope.get("method", "GET")
        path = scope["path"]
        self.recording = recording = tracer.recording
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
        self.span = span
        self.context = ctx
        self.trace_id = format(span.get_span_context().trace_id, "032x").encode()

    def attach(self) -> object:
        """Make the span current for the request (a token for `otel_context.detach`)."""
        return otel_context.attach(trace.set_span_in_context(self.span, self.context))

    def respond(self, message: Message, status: int, has_trace_id: bool) -> None:
        """The response's start: its status on the span, and `x-trace-id` unless it has one."""
        if self.recording:
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        if not has_trace_id:
            message["headers"] = [*message.get("headers", ()), (b"x-trace-id", self.trace_id)]

    def failed(self, exc: BaseException) -> None:
        self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))

    def end(self) -> None:
        self.span.end()
