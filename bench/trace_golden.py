"""Every exported span of seven kinds of traced request, normalised, for a before/after diff.

    python bench/trace_golden.py OUT.json          # then, on another commit: diff the two files

The gateway is served with tracing to a receiver that keeps each OTLP/HTTP body; each body is
decoded with opentelemetry-proto and every span written out with its name, kind, scope, parent,
status and all its attributes in the order they were exported. Ids, times and the per-request
session ids are replaced by their order of appearance, so two runs of the same code give the same
file and a change to any span, attribute, attribute order or status shows in the diff.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import parse_config
from app.factory import create_app
from tests.fakes.openai_fake import Fail, OpenAIFake, Reply, Stream
from tests.fakes.server import serve_app

CONFIG = """
tracing: {{exporter: otlp, endpoint: "{collector}/v1/traces"}}
providers:
  primary: {{type: openai, base_url: "{primary}/v1", api_key: sk-p}}
  backup: {{type: openai, base_url: "{backup}/v1", api_key: sk-b}}
  sim: {{type: simulated, latency_ms: 0}}
models:
  smart: {{provider: primary, model: gpt-4o, input_price: 2.5, output_price: 10}}
  cheap: {{provider: backup, model: gpt-4o-mini}}
  local: {{provider: sim, model: sim-1}}
routes:
  single: smart
  default:
    failover: {{chain: [smart, cheap], retries: 0}}
  sorted:
    classify:
      rules: {{creative: [haiku, poem]}}
      branches: {{creative: {{failover: [smart, cheap]}}}}
      otherwise: cheap
  offline: local
"""
ASK = [{"role": "user", "content": "Write a haiku about rain"}]
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.bodies.append(body)
        return Response(b"", media_type="application/x-protobuf")


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return [[kv.key, _value(kv.value)] for kv in value.kvlist_value.values]
    return [kind, getattr(value, kind)] if kind else None


def spans_of(bodies: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for body in bodies:
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        for resource_spans in message.resource_spans:
            resource = [[a.key, _value(a.value)] for a in resource_spans.resource.attributes]
            for scope_spans in resource_spans.scope_spans:
                scope = [scope_spans.scope.name, scope_spans.scope.version]
                for span in scope_spans.spans:
                    out.append(
                        {
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex() or None,
                            "name": span.name,
                            "kind": span.kind,
                            "scope": scope,
                            "resource": resource,
                            "attributes": [[a.key, _value(a.value)] for a in span.attributes],
                            "events": [e.name for e in span.events],
                            "links": len(span.links),
                            "status": [span.status.code, span.status.message],
                            "flags": span.flags,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "dropped": span.dropped_attributes_count,
                        }
                    )
    return out


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _walk(
    spans: list[dict[str, Any]], names: dict[str, str], parent: str | None, depth: int
) -> list[Any]:
    out = []
    for span in sorted((s for s in spans if s["parent"] == parent), key=lambda s: s["start"]):
        body = json.dumps({k: v for k, v in span.items() if k not in DROP})
        for uuid, name in names.items():
            body = body.replace(uuid, name)
        body = re.sub(r"\d{16,}", "<time>", body)  # a timestamp quoted in a value
        out.append({"depth": depth, **json.loads(body)})
        out += _walk(spans, names, span["id"], depth + 1)
    return out


def normalised(traces: list[tuple[str, str]], spans: list[dict[str, Any]]) -> list[Any]:
    """Each request's spans as a tree (children by start time), ids and times replaced."""
    out = []
    for label, trace_id in traces:
        mine = [s for s in spans if s["trace"] == trace_id]
        names: dict[str, str] = {}
        for uuid in _UUID.findall(json.dumps(mine)):
            names.setdefault(uuid, f"<session {len(names)}>")
        roots = {s["parent"] for s in mine} - {s["id"] for s in mine}
        tree: list[Any] = []
        for root in sorted(roots, key=str):
            tree += _walk(mine, names, root, 0)
        out.append({"request": label, "spans": len(mine), "tree": tree})
    return out


DROP = {"trace", "id", "parent", "start", "end"}


def main() -> None:
    out = Path(sys.argv[1])
    receiver = Receiver()
    primary, backup = OpenAIFake("primary"), OpenAIFake("backup")
    with ExitStack() as stack:
        collector = stack.enter_context(serve_app(receiver.app))
        urls = {
            "collector": collector,
            "primary": stack.enter_context(serve_app(primary.app)),
            "backup": stack.enter_context(serve_app(backup.app)),
        }
        app = create_app(parse_config(CONFIG.format(**urls), env={}))
        url = stack.enter_context(serve_app(app))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        traces: list[tuple[str, str]] = []

        def ask(label: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            response = client.post("/v1/chat/completions", json=body, headers=headers or {})
            if body.get("stream"):
                response.read()
            traces.append((label, response.headers["x-trace-id"]))

        primary.push(Reply(text="Rain on the roof", usage=(20, 10)))
        ask(
            "single, user and metadata",
            {"model": "single", "messages": ASK, "user": "u-7", "metadata": {"team": "a", "n": 3}},
        )
        primary.push(Fail(500))
        backup.push(Reply(text="From the backup"))
        ask("failover after a 500", {"model": "default", "messages": ASK})
        primary.push(Stream(chunks=["Rain ", "falls."]))
        ask("stream", {"model": "single", "messages": ASK, "stream": True})
        primary.push(Fail(500))
        backup.push(Fail(503))
        ask("every target fails", {"model": "default", "messages": ASK})
        primary.push(Reply(text="Sessions"))
        ask(
            "caller's session and traceparent",
            {"model": "single", "messages": ASK},
            {"x-session-id": "conv-42", "traceparent": PARENT},
        )
        primary.push(
            Reply(text=None, tool_calls=[{"name": "weather", "arguments": '{"city": "Oslo"}'}])
        )
        ask("classify, then a tool call", {"model": "sorted", "messages": ASK})
        ask("simulated provider", {"model": "offline", "messages": ASK})
        app.state.tracing.flush()
        time.sleep(0.2)
        with receiver.lock:
            bodies = list(receiver.bodies)
    result = normalised(traces, spans_of(bodies))
    out.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(f"{sum(r['spans'] for r in result)} spans of {len(result)} requests -> {out}")


if __name__ == "__main__":
    main()
