"""No secret leaves the gateway: canaries planted in every secret place of a config (provider
keys, an AWS secret, caller keys, the admin key, a tracing key, a secret from the environment)
are looked for in everything a battery of traffic produced: response bodies and headers, log
lines at every level, the spans the OTLP receiver decoded, /metrics and /v1/stats.

The upstream fakes are hostile on purpose: their error messages quote the key they were sent,
on every status (as OpenAI's 401 does), so an adapter that passed an upstream's text through
unscrubbed would leak it into `details.attempts`, spans or logs.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from app.config import parse_config
from app.factory import create_app
from tests.fakes import anthropic_fake
from tests.fakes.openai_fake import Fail, OpenAIFake, Reply, Stream
from tests.fakes.otlp_collector import Collector
from tests.fakes.server import serve_app

CANARIES = {
    "openai": "sk-canary-openai-5f1e9a7c3b",
    "anthropic": "sk-ant-canary-0d4b8e2f61",
    "aws": "canary/aws+Secret9c2e7d1b0a",
    "caller": "canary-caller-key-3a9f4c",
    "named_caller": "canary-named-key-7e21b5",
    "admin": "canary-admin-key-b84c0e",
    "tracing": "canary-hh-key-62d0f9a1",
    "env": "canary-from-env-4c7a1e9b",
}

CONFIG = """
server:
  api_keys: ["{caller}"]
  keys: [{{key: "{named_caller}", name: team, rpm: 100000}}]
  admin_key: "{admin}"
tracing: {{exporter: otlp, endpoint: "{collector}/v1/traces", api_key: "{tracing}"}}
providers:
  openai: {{type: openai, base_url: "{openai_url}/v1", api_key: "{openai}"}}
  envkey: {{type: openai, base_url: "{openai_url}/v1", api_key: "${{ENV_SECRET}}"}}
  anthropic: {{type: anthropic, base_url: "{anthropic_url}", api_key: "{anthropic}"}}
  bedrock: {{type: bedrock, region: eu-west-1, endpoint_url: "http://127.0.0.1:9",
             access_key_id: AKIACANARYTEST00001, secret_access_key: "{aws}"}}
models:
  gpt: {{provider: openai, model: gpt-4o-mini, timeout_s: 2}}
  env: {{provider: envkey, model: gpt-4o-mini, timeout_s: 2}}
  claude: {{provider: anthropic, model: claude-sonnet-5, timeout_s: 2}}
  br: {{provider: bedrock, model: "us.anthropic.claude-haiku-4-5-20251001-v1:0", timeout_s: 1}}
routes:
  default: {{failover: {{chain: [gpt, env, claude, br], retries: 0}}}}
  direct: gpt
"""

ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}


class _Hostile(OpenAIFake):
    """Quotes the key it was sent in every error it gives."""

    async def _respond(self, body: dict[str, Any], model: str, seen: Any) -> Any:
        if self.script and isinstance(self.script[0], Fail):
            key = seen.headers.get("authorization", "").removeprefix("Bearer ")
            self.script[0].message += f" (key: {key})"
        return await super()._respond(body, model, seen)


@pytest.fixture(scope="module")
def produced() -> dict[str, list[str]]:
    """Run the battery; return everything it produced, by where it came from."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    out: dict[str, list[str]] = {"responses": [], "logs": [], "spans": [], "metrics": []}
    try:
        with ExitStack() as stack:
            openai = _Hostile("openai")
            anthropic = anthropic_fake.AnthropicFake(api_key=CANARIES["anthropic"])
            collector = Collector()
            urls = {
                "openai_url": stack.enter_context(serve_app(openai.app)),
                "anthropic_url": stack.enter_context(serve_app(anthropic.app)),
                "collector": stack.enter_context(serve_app(collector.app)),
            }
            text = CONFIG.format(**CANARIES, **urls)
            app = create_app(parse_config(text, env={"ENV_SECRET": CANARIES["env"]}))
            base = stack.enter_context(serve_app(app))
            _battery(base, openai, anthropic, out["responses"])
            app.state.tracing.flush()
            out["spans"] = [
                json.dumps([s.name, s.attributes, s.resource, s.status_message], default=str)
                for s in collector.spans
            ]
            assert out["spans"], "the receiver got no spans: the scan would prove nothing"
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    out["logs"] = [f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in records]
    return out


def _battery(base: str, openai: OpenAIFake, anthropic: Any, responses: list[str]) -> None:
    caller = {"authorization": f"Bearer {CANARIES['caller']}"}
    named = {"x-api-key": CANARIES["named_caller"]}
    admin = {"authorization": f"Bearer {CANARIES['admin']}"}

    def keep(response: httpx.Response) -> httpx.Response:
        responses.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    with httpx.Client(base_url=base, timeout=20) as client:
        # Answers, streamed and not, on each dialect.
        openai.push(Reply(), Stream())
        keep(client.post("/v1/chat", json={**ASK, "route": "direct"}, headers=caller))
        keep(
            client.post("/v1/chat", json={**ASK, "route": "direct", "stream": True}, headers=named)
        )
        # Every upstream error class, each quoting the key: the chain fails through all four.
        for status in (400, 401, 403, 404, 408, 429, 500, 503):
            openai.push(Fail(status, "bad things"), Fail(status, "bad things"))
            anthropic.queue(anthropic_fake.Reply.fail(500, "overloaded"))
            keep(client.post("/v1/chat", json=ASK, headers=caller))
            openai.push(Fail(status, "bad things"))
            keep(
                client.post("/v1/chat/completions", json={**ASK, "model": "direct"}, headers=caller)
            )
            openai.push(Fail(status, "bad things"))
            body = {**ASK, "model": "direct", "max_tokens": 10, "stream": True}
            keep(client.post("/v1/messages", json=body, headers=caller))
        # Refusals: no key, wrong keys, the admin key on a chat endpoint, a caller's on admin.
        keep(client.post("/v1/chat", json=ASK))
        keep(client.post("/v1/chat", json=ASK, headers={"authorization": "Bearer wrong"}))
        keep(client.post("/v1/chat", json=ASK, headers=admin))
        keep(client.post("/admin/reload", headers=caller))
        keep(client.post("/admin/reload", headers=admin))  # no file: refused with its reason
        keep(client.post("/v1/chat", content=b"{not json", headers=caller))
        keep(client.get("/v1/models", headers=caller))
        keep(client.get("/v1/stats", headers=caller))
        keep(client.get("/openapi.json"))
        keep(client.get("/metrics"))


def _fragments(secret: str) -> list[str]:
    """The secret, and enough of it to identify it (an upstream may quote part of a key)."""
    return [secret, secret[-10:], secret[:12]]


@pytest.mark.parametrize("where", ["responses", "logs", "spans", "metrics"])
def test_no_secret_in_anything_produced(produced: dict[str, list[str]], where: str) -> None:
    text = "\n".join(produced[where] if where != "metrics" else produced["responses"][-1:])
    for name, secret in CANARIES.items():
        for fragment in _fragments(secret):
            assert fragment not in text, f"the {name} secret appears in {where}"


def test_the_battery_reached_the_upstreams_and_failed_through_them(
    produced: dict[str, list[str]],
) -> None:
    joined = "\n".join(produced["responses"])
    assert '"type":"upstream_error"' in joined
    assert "details" in joined and "attempts" in joined
    assert any(line.startswith("200 ") for line in produced["responses"])
    assert any(line.startswith("401 ") for line in produced["responses"])
