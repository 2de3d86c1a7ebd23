"""Policies nested in policies (classify → failover → ab_split), dry runs, and explain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.config import parse_config
from app.explain import explain, render
from app.gateway import Gateway
from policies.ab_split import pick
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.openai_fake import Fail, OpenAIFake, Reply
from tests.fakes.server import serve_app
from tests.routing_helpers import ask

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "llm-router"

NESTED = """
providers:
  a: {{type: openai, base_url: "{a}/v1", api_key: k}}
  b: {{type: openai, base_url: "{b}/v1", api_key: k}}
  sim: {{type: simulated}}
models:
  arm-a: {{provider: a, model: gpt-4o}}
  arm-b: {{provider: b, model: gpt-4o-mini}}
  backup: {{provider: sim, model: sim-backup}}
routes:
  default:
    classify:
      rules: {{analytical: [compare, analyse]}}
      branches:
        analytical:
          failover:
            - ab_split:
                sticky: user
                variants: {{A: {{weight: 1, to: arm-a}}, B: {{weight: 1, to: arm-b}}}}
            - backup
      otherwise: backup
"""


@pytest.fixture
def nested(stack):
    a, b = OpenAIFake("a"), OpenAIFake("b")
    text = NESTED.format(
        a=stack.enter_context(serve_app(a.app)), b=stack.enter_context(serve_app(b.app))
    )
    return a, b, text


def user_in(gateway: Gateway, arm: str) -> str:
    split = gateway.routes["default"].branches["analytical"].chain[0]
    return next(
        u
        for u in (f"user-{i}" for i in range(100))
        if pick(split.point_for(u), split.weights) == arm
    )


def test_classify_failover_ab_split_over_http(serve_gateway, nested) -> None:
    a, b, text = nested
    gateway = Gateway.build(parse_config(text, env={}))
    base = serve_gateway(text)
    body = {"messages": [{"role": "user", "content": "Compare Python and Go"}]}

    in_a, in_b = user_in(gateway, "A"), user_in(gateway, "B")
    data = httpx.post(base + "/v1/chat", json={**body, "user": in_b}).json()
    assert [(d["policy"], d["outcome"]) for d in data["decisions"]] == [
        ("classify", "analytical"),
        ("ab_split", "B"),
        ("failover", "ab_split"),
    ]
    assert data["target"] == "arm-b" and len(b.log) == 1 and not a.log
    assert data["decisions"][2]["at"] == "routes.default.classify.branches.analytical.failover"
    assert data["decisions"][1]["at"].endswith("failover.chain.0.ab_split")

    # Arm A's upstream fails: the split still chose A (sticky), failover moved on to backup.
    a.push(Fail(500, "boom"))
    data = httpx.post(base + "/v1/chat", json={**body, "user": in_a}).json()
    assert data["target"] == "backup"
    assert [(d["policy"], d["outcome"]) for d in data["decisions"]][1:] == [
        ("ab_split", "A"),
        ("failover", "backup"),
    ]
    attempts = data["decisions"][2]["detail"]["attempts"]
    assert [(x["target"], x.get("error")) for x in attempts] == [
        ("arm-a", "server_error"),
        ("backup", None),
    ]
    assert len(a.log) == 1

    # Not analytical: straight to otherwise.
    data = httpx.post(
        base + "/v1/chat", json={"messages": [{"role": "user", "content": "hi"}]}
    ).json()
    assert data["target"] == "backup" and data["decisions"][0]["outcome"] == "otherwise"


def test_a_nested_stream_is_served_by_the_chosen_arm(serve_gateway, nested) -> None:
    a, _b, text = nested
    gateway = Gateway.build(parse_config(text, env={}))
    base = serve_gateway(text)
    body = {"messages": [{"role": "user", "content": "analyse this"}], "stream": True}
    response = httpx.post(base + "/v1/chat", json={**body, "user": user_in(gateway, "A")})
    assert response.headers["x-router-model"] == "gpt-4o"
    assert "data: " in response.text and len(a.log) == 1 and a.bodies[0]["stream"] is True


def test_dry_run_decides_without_calling_the_final_target(serve_gateway, nested) -> None:
    a, b, text = nested
    base = serve_gateway(text)
    body = {"messages": [{"role": "user", "content": "Compare"}], "user": "u1", "dry_run": True}
    data = httpx.post(base + "/v1/chat", json=body).json()
    assert data["dry_run"] is True and data["message"] is None
    assert data["target"] in ("arm-a", "arm-b")
    assert not a.log and not b.log


async def test_explain_renders_the_path_and_why(nested) -> None:
    _a, _b, text = nested
    gateway = Gateway.build(parse_config(text, env={}))
    result = await explain(gateway, ask("Please compare these", user=user_in(gateway, "B")))
    out = render(result)
    assert out.splitlines() == [
        "route default (dry run: the final target is not called)",
        "  1. classify at routes.default.classify → analytical",
        '       rule "compare" matched "compare"',
        "  2. ab_split at routes.default.classify.branches.analytical.failover.chain.0"
        ".ab_split → B",
        "       variant B (50% of traffic), sticky on user",
        "  3. failover at routes.default.classify.branches.analytical.failover → ab_split",
        "       the first in its chain",
        f"target: arm-b (b gpt-4o-mini), estimated ${result.target['estimated_cost_usd']:.6f} "
        "for this request",
    ]
    assert result.models_called == []
    missing = await explain(gateway, ask("x", route="nope"))
    assert "error: not_found" in render(missing)


def test_explain_cli_against_the_multi_provider_example(stack) -> None:
    openai_fake, anthropic_fake = OpenAIFake(), AnthropicFake(api_key=None)
    openai_fake.push(Reply(text="Creative!"))
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENAI_API_KEY": "k",
        "ANTHROPIC_API_KEY": "k",
        "OPENAI_BASE_URL": stack.enter_context(serve_app(openai_fake.app)) + "/v1",
        "ANTHROPIC_BASE_URL": stack.enter_context(serve_app(anthropic_fake.app)),
    }
    config = str(ROOT / "examples" / "multi-provider-agent.yaml")
    args = [str(BIN), "explain", "--config", config, "--user", "u1", "--meta", "tier=gold"]
    out = subprocess.run(
        [*args, "Write a poem about rain"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1] == "  1. classify at routes.default.classify → creative"
    assert lines[2].startswith('       asked classifier cheap: "Creative!" → creative')
    assert lines[3].startswith("target: claude (anthropic claude-sonnet-4-6), estimated $0.0")
    assert lines[-1] == "note: the model cheap was called to decide the path"
    # The classifier was asked once; the final target never.
    assert len(openai_fake.log) == 1 and openai_fake.bodies[0]["model"] == "gpt-4o-mini"
    assert anthropic_fake.requests == []

    bad = subprocess.run(
        [*args, "--meta", "oops", "x"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad.returncode != 0 and "key=value" in bad.stderr
