"""The HoneyHive shape: what HoneyHive's SDK stamps on every span, stamped here without its SDK.

HoneyHive groups spans into sessions and events. Its SDK's span processor puts the session id,
project and source on every span (also under Traceloop's association-property names, which its
ingestion reads too) and an event type: `model` for LLM calls, `chain` for workflow steps, `tool`
otherwise. It also skips, without a word, every span that has no session id. Here every span gets
a session: the caller's (`x-session-id`, or `metadata.session_id`), else one per request.

Why not HoneyHive's SDK itself (measured with honeyhive 1.7.0, see docs/tracing.md): its
`HoneyHiveTracer.init` makes a blocking call to create a session (5 s against a silent collector),
its span processor costs ~30x the plain SDK's per span, and a full queue drops spans with a log
line each. The same attributes go out through the standard OTLP/HTTP exporter instead, to the
same endpoint with the same headers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

DEFAULT_API_URL = "https://api.dp1.us.honeyhive.ai"  # honeyhive 1.7.0's default server URL
TRACES_PATH = "/opentelemetry/v1/traces"

SESSION_ID = "honeyhive.session_id"
PROJECT = "honeyhive.project"
SOURCE = "honeyhive.source"
EVENT_TYPE = "honeyhive_event_type"
# Traceloop's association properties: HoneyHive's SDK sets both, its ingestion reads either.
TL_SESSION_ID = "traceloop.association.properties.session_id"
TL_PROJECT = "traceloop.association.properties.project"
TL_SOURCE = "traceloop.association.properties.source"

SESSION_HEADER = "x-session-id"
_SESSION_KEY = otel_context.create_key("llm_router.session")
OUR_SCOPE = "llm_router"


@dataclass
class Session:
    """The HoneyHive session of one request: the caller's conversation, or the request itself."""

    id: str
    from_caller: bool = False

    @classmethod
    def new(cls) -> Session:
        return cls(str(uuid.uuid4()))


def with_session(session: Session, ctx: Context | None = None) -> Context:
    return otel_context.set_value(_SESSION_KEY, session, ctx)


def session_of(ctx: Context | None = None) -> Session | None:
    value = otel_context.get_value(_SESSION_KEY, ctx)
    return value if isinstance(value, Session) else None


def traces_endpoint(api_url: str) -> str:
    return api_url.rstrip("/") + TRACES_PATH


def export_headers(api_key: str, source: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "X-Source": source}


class StampProcessor(SpanProcessor):
    """Stamps session, project, source and event type on every span as it starts."""

    def __init__(self, project: str, source: str) -> None:
        self.project = project
        self.source = source

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        session = session_of(parent_context)
        if session is None:  # a span outside any request (none of ours): a session of its own
            session = Session.new()
        span.set_attributes(
            {
                SESSION_ID: session.id,
                TL_SESSION_ID: session.id,
                PROJECT: self.project,
                TL_PROJECT: self.project,
                SOURCE: self.source,
                TL_SOURCE: self.source,
            }
        )
        scope = span.instrumentation_scope
        if scope is None or scope.name != OUR_SCOPE:
            # Only the LLM SDKs' instrumentors make spans besides us: each is one model call.
            span.set_attribute(EVENT_TYPE, "model")

    def on_end(self, span: ReadableSpan) -> None:
        return None
