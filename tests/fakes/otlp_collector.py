"""A real OTLP/HTTP trace receiver: decodes each protobuf ExportTraceServiceRequest it is sent.

Served on a loopback port by the tests (tests/fakes/server.py) and fed by the gateway's real
exporter. `hang_s` makes it a collector that accepts and then says nothing for that long.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: int
    scope: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    start_ns: int
    end_ns: int


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    spans: int


@dataclass
class Collector:
    hang_s: float = 0.0
    spans: list[Span] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        body = await request.body()
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        received: list[Span] = []
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        Span(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            kind=span.kind,
                            scope=scope_spans.scope.name,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            resource=resource,
                            status_code=span.status.code,
                            status_message=span.status.message,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.posts.append(Post(request.url.path, dict(request.headers), len(received)))
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> list[Span]:
        """The spans received, once `predicate(spans)` holds (AssertionError after timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = [s.name for s in spans]
                raise AssertionError(f"the collector did not get the expected spans: {names}")
            time.sleep(0.02)

    def trace(self, trace_id: str, count: int, timeout_s: float = 5.0) -> list[Span]:
        """The spans of one trace, once at least `count` of them have arrived."""
        spans = self.wait_for(
            lambda got: sum(s.trace_id == trace_id for s in got) >= count, timeout_s
        )
        return [s for s in spans if s.trace_id == trace_id]
