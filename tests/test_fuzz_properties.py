"""Hypothesis over requests and over configs.

Requests: conversations of any roles, parameters in and out of range, unicode of every plane
(lone surrogates included), empty and huge values, on all three chat dialects, streamed or not:
every answer is a 200 of the right shape or a typed 4xx/5xx error, never an `internal` 500.

Configs: documents built from the config's own vocabulary, mutated at random: each either loads
or is refused with a ConfigError that says where; one that loads builds a gateway (or is refused
the same way), and that gateway answers a request on every route without an internal error.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.config import ConfigError, parse_config
from app.factory import create_app
from tests.fakes.server import serve_app

CONFIG = """
server: {max_body_bytes: 200000, max_messages: 50}
providers:
  sim: {type: simulated, error_rate: {server_error: 0.1}, seed: 5}
models:
  fast: {provider: sim, model: sim-fast, input_price: 0.1, output_price: 0.2, context_window: 4096}
  slow: {provider: sim, model: sim-slow}
routes:
  default: {failover: {chain: [fast, slow]}}
"""
TYPED = {400, 402, 404, 413, 429, 502, 504, 529}

texts = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec=None), max_size=30),  # surrogates too
    st.sampled_from(["", " ", "\x00", "\u202e", "🦀" * 10, "x" * 5000]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
tool_call = st.fixed_dictionaries(
    {
        "id": texts,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": texts, "arguments": texts}),
    }
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer", ""])},
    optional={
        "content": st.one_of(
            texts,
            st.none(),
            st.lists(
                st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": texts}),
                max_size=3,
            ),
        ),
        "name": texts,
        "tool_call_id": texts,
        "tool_calls": st.lists(tool_call, max_size=2),
    },
)
params = st.fixed_dictionaries(
    {},
    optional={
        "temperature": json_values | st.floats(-5, 5),
        "max_tokens": json_values | st.integers(-5, 10**12),
        "top_p": st.floats(-1, 2),
        "stop": st.one_of(texts, st.lists(texts, max_size=5)),
        "user": texts,
        "metadata": json_values,
        "max_cost_usd": st.floats(-1, 1),
        "tools": st.lists(
            st.fixed_dictionaries(
                {"type": st.just("function"), "function": st.fixed_dictionaries({"name": texts})}
            ),
            max_size=2,
        ),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), json_values),
        "dry_run": st.booleans(),
    },
)
requests = st.tuples(
    st.sampled_from(["/v1/chat", "/v1/chat/completions", "/v1/messages"]),
    st.lists(message, max_size=6),
    params,
    st.booleans(),
    st.sampled_from(["default", "fast", "sim/x", "nope", ""]),
)


@pytest.fixture(scope="module")
def base():
    with ExitStack() as stack:
        yield stack.enter_context(serve_app(create_app(parse_config(CONFIG, env={}))))


def _body(path: str, messages: list, extra: dict, stream: bool, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": messages, "stream": stream, **extra}
    if path == "/v1/chat":
        body["route"] = name
    else:
        body["model"] = name
        body.pop("dry_run", None)
        if path == "/v1/messages":
            body.setdefault("max_tokens", 16)
            for key in ("user", "tool_choice", "tools", "max_cost_usd"):
                body.pop(key, None)
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(request=requests)
@example(request=("/v1/chat", [{"role": "user", "content": "\udc00"}], {}, False, "default"))
@example(request=("/v1/messages", [{"role": "user", "content": "\ud800x"}], {}, True, "default"))
@example(request=("/v1/chat", [{"role": "user", "content": "x" * 300_000}], {}, False, "fast"))
def test_every_request_gets_an_answer_or_a_typed_error(base: str, request: tuple) -> None:
    path, messages, extra, stream, name = request
    body = _body(path, messages, extra, stream, name)
    content = json.dumps(body, ensure_ascii=True).encode()
    response = httpx.post(
        base + path, content=content, headers={"content-type": "application/json"}, timeout=20
    )
    assert response.status_code == 200 or response.status_code in TYPED, response.text[:300]
    if response.status_code != 200:
        error = response.json()["error"]
        kind = (error.get("details") or {}).get("router_error", error["type"])  # either dialect
        assert kind != "internal", response.text[:300]
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith(("}", "[DONE]")), response.text[-200:]
    else:
        assert isinstance(response.json(), dict)


# ---- configs ----------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "sim", "default", "fast", "x/y", "", "routes"])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(-1, 100), names, texts
)


def _policies(inner: st.SearchStrategy) -> st.SearchStrategy:
    """Each policy's mapping, with its fields right, wrong or missing."""
    fd = st.fixed_dictionaries
    breaker = fd({}, optional={"failures": scalars, "cooldown_s": scalars})
    failover = fd(
        {"chain": st.lists(inner, max_size=3)},
        optional={"retries": scalars, "circuit_breaker": breaker},
    )
    variant = fd({"weight": scalars, "to": inner})
    ab_split = fd(
        {"variants": st.dictionaries(names, variant, max_size=3)}, optional={"sticky": scalars}
    )
    classify = fd(
        {
            "rules": st.dictionaries(names, st.lists(texts, max_size=2), max_size=2),
            "branches": st.dictionaries(names, inner, max_size=2),
        },
        optional={"otherwise": inner},
    )
    cost = fd(
        {"scorer": st.just("heuristic"), "threshold": scalars, "below": inner, "above": inner}
    )
    when = st.dictionaries(
        st.sampled_from(["metadata.tier", "env", "user", "nonsense"]), scalars, max_size=2
    )
    match = st.lists(fd({"to": inner}, optional={"when": when}), max_size=3)
    return st.one_of(
        fd({"failover": st.lists(inner, max_size=3)}),
        fd({"failover": failover}),
        fd({"ab_split": ab_split}),
        fd({"classify": classify}),
        fd({"cost_threshold": cost}),
        fd({"match": match}),
        st.dictionaries(names, inner, max_size=2),
        st.lists(inner, max_size=2),
        scalars,
    )


node = st.recursive(names, _policies, max_leaves=6)
configs = st.fixed_dictionaries(
    {
        "providers": st.dictionaries(
            names,
            st.one_of(
                st.fixed_dictionaries(
                    {"type": st.just("simulated")},
                    optional={
                        "latency_ms": scalars,
                        "error_rate": scalars,
                        "seed": scalars,
                        "words": scalars,
                        "max_concurrency": scalars,
                    },
                ),
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["openai", "nonsense", None])},
                    optional={"api_key": scalars, "base_url": scalars},
                ),
                scalars,
            ),
            max_size=2,
        ),
        "models": st.dictionaries(
            names,
            st.one_of(
                st.fixed_dictionaries(
                    {"provider": names, "model": names},
                    optional={
                        "input_price": scalars,
                        "timeout_s": scalars,
                        "context_window": scalars,
                    },
                ),
                scalars,
            ),
            max_size=3,
        ),
        "routes": st.dictionaries(names, node, max_size=3),
    },
    optional={
        "server": st.fixed_dictionaries(
            {},
            optional={
                "api_keys": st.lists(scalars, max_size=2),
                "max_messages": scalars,
                "request_timeout_s": scalars,
                "max_body_bytes": scalars,
                "typo": scalars,
            },
        ),
        "state": st.fixed_dictionaries(
            {}, optional={"backend": st.sampled_from(["memory", "redis", "etcd"])}
        ),
        "tracing": st.fixed_dictionaries(
            {}, optional={"exporter": st.sampled_from(["none", "console", "zipkin"])}
        ),
        "extra": scalars,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(document=configs)
@example(
    document={
        "providers": {"sim": {"type": "simulated", "error_rate": 0.5, "seed": 1}},
        "models": {"a": {"provider": "sim", "model": "m", "timeout_s": 0.01}},
        "routes": {
            "default": {
                "classify": {
                    "rules": {"x": ["story"]},
                    "branches": {
                        "x": {
                            "failover": [
                                "a",
                                {"ab_split": {"variants": {"v": {"weight": 1, "to": "sim/other"}}}},
                            ]
                        }
                    },
                    "otherwise": "a",
                }
            }
        },
    }
)
def test_every_config_loads_or_is_refused_with_its_reasons(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    try:
        config = parse_config(text, env={})
    except ConfigError as error:
        assert error.problems and all(str(p) for p in error.problems)
        return
    if config.state.backend == "redis" or config.tracing.exporter != "none":
        return  # loaded; serving it would reach out of the process
    try:
        app = create_app(config)
    except ConfigError as error:
        assert error.problems
        return
    with TestClient(app) as client:
        for name in [*config.routes, *config.models]:
            body = {"route": name, "messages": [{"role": "user", "content": "story"}]}
            response = client.post("/v1/chat", json=body, headers=_auth(config))
            assert response.status_code == 200 or response.status_code in TYPED, response.text
            assert response.json().get("error", {}).get("type") != "internal"


def _auth(config: Any) -> dict[str, str]:
    keys = config.server.caller_keys()
    return {"authorization": f"Bearer {keys[0]}"} if keys else {}
