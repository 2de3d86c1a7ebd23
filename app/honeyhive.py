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
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

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


class StampSampler(Sampler):
    """Samples as `delegate` does, and gives each span it records the HoneyHive stamp: session,
    project and source, and the event type `model` for a span that names none of its own
    (every span of the gateway's names one; the SDK instrumentors' spans, one model call each,
    never do).

    The stamp travels with the sampling result, which the SDK makes the span's first
    attributes: no span processor runs per span to add them afterwards, one attribute set at a
    time under the span's lock. The order is the one a processor stamping at start gave: the
    span's own attributes, then the stamp.
    """

    def __init__(self, project: str, source: str, delegate: Sampler) -> None:
        self.project = project
        self.source = source
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampled = self._default_on(parent_context)
        if sampled is None:
            result = self.delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
            if not result.decision.is_recording():
                return result
            decision, own, state = result.decision, result.attributes, result.trace_state
        else:  # the default sampler keeps the span's attributes as they are
            decision, own, state = Decision.RECORD_AND_SAMPLE, attributes or {}, sampled[0]
        session = session_of(parent_context)
        if session is None:  # a span outside any request (none of ours): a session of its own
            session = Session.new()
        project, source = self.project, self.source
        stamped = {
            **own,
            SESSION_ID: session.id,
            TL_SESSION_ID: session.id,
            PROJECT: project,
            TL_PROJECT: project,
            SOURCE: source,
            TL_SOURCE: source,
        }
        if EVENT_TYPE not in stamped:
            stamped[EVENT_TYPE] = "model"
        return SamplingResult(decision, stamped, state)

    def _default_on(self, parent_context: Context | None) -> tuple[TraceState | None] | None:
        """What the SDK's default sampler (parent-based, always on) answers when it records,
        without its two lookups of the parent and two results: the span is recorded and
        sampled with its own attributes and the trace state given, the parent's (none for a
        root span); None for another delegate or a parent not sampled (the delegate answers
        those)."""
        if self.delegate is not DEFAULT_ON:
            return None
        parent = get_current_span(parent_context).get_span_context()
        if parent is None or not parent.is_valid:
            return (None,)
        if not parent.trace_flags.sampled:
            return None
        return (parent.trace_state,)

    def get_description(self) -> str:
        return f"HoneyHiveStamp{{{self.delegate.get_description()}}}"


def default_sampler() -> Sampler:
    """The sampler the SDK would choose (`OTEL_TRACES_SAMPLER`, else parent-based always-on)."""
    return TracerProvider(shutdown_on_exit=False).sampler
