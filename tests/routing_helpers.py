"""Running a request through a compiled routing tree in-process, for the policy tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.chat import ChatRequest, Message
from app.config import parse_config
from app.gateway import Gateway
from app.routing import Call

SIM = """
providers:
  sim: {type: simulated}
models:
  cheap: {provider: sim, model: sim-cheap, input_price: 0.15, output_price: 0.60}
  strong: {provider: sim, model: sim-strong, input_price: 2.5, output_price: 10}
  claude: {provider: sim, model: sim-claude, input_price: 3, output_price: 15}
"""


def build(routes: str, *, base: str = SIM, env: Mapping[str, str] | None = None) -> Gateway:
    return Gateway.build(parse_config(base + "routes:\n" + routes, env=dict(env or {})))


def ask(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **fields)


async def run(
    gateway: Gateway,
    text: str,
    *,
    route: str = "default",
    headers: Mapping[str, str] | None = None,
    env: str | None = None,
    **fields: Any,
) -> Call:
    """Complete one request; returns the call (decisions, attempts, answer)."""
    call = gateway.new_call(ask(text, route=route, **fields), headers)
    if env is not None:
        call.env = env
    node = gateway.node_for(route)
    assert node is not None
    await node.complete(call)
    return call


def decision(call: Call, policy: str) -> dict[str, Any]:
    found = [d.as_dict() for d in call.decisions if d.policy == policy]
    assert len(found) == 1, [d.as_dict() for d in call.decisions]
    return found[0]
