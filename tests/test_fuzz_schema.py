"""Schemathesis against the gateway's own OpenAPI document: every operation, valid and invalid
inputs, every answer checked against what the document declares for it.

Checked for every generated case: the status is one the operation declares, the body matches
that status's schema, the content type is declared; and no 5xx but the typed upstream errors
(a 502/504 from `upstream_error`/`upstream_timeout`, Anthropic's 529/500 for the same): an
`internal` 500 is a bug. The simulated provider fails some calls so that the upstream error
paths are fuzzed too. Bounded: a fixed number of examples per operation, no shrinking deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import parse_config
from app.factory import create_app
from tests.fakes.server import serve_app

CONFIG = """
providers:
  sim: {type: simulated, error_rate: {server_error: 0.1, rate_limited: 0.05, timeout: 0.05},
        seed: 7}
models:
  fast: {provider: sim, model: sim-fast, input_price: 0.15, output_price: 0.6}
  slow: {provider: sim, model: sim-slow}
routes:
  default: {failover: {chain: [fast, slow], retries: 1, backoff: {initial_s: 0, max_s: 0}}}
  other: fast
"""

# The typed upstream errors: the only server-side statuses a correct gateway gives.
UPSTREAM_TYPES = frozenset({"upstream_error", "upstream_timeout"})
EXAMPLES = 40  # per operation and mode
NAMES = ("default", "other", "fast", "sim/any-model")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Any]]:
    app = create_app(parse_config(CONFIG, env={}))
    with ExitStack() as stack:
        base = stack.enter_context(serve_app(app))
        yield base, app.openapi()


def upstream_typed(response: httpx.Response) -> bool:
    """A 5xx that is a typed upstream failure, in SPEC's shape or Anthropic's."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    if error.get("type") in UPSTREAM_TYPES:
        return True
    return (error.get("details") or {}).get("router_error") in UPSTREAM_TYPES


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, ops in document["paths"].items()
        for method in ops
        if path != "/admin/reload"  # re-reads a config file: fuzzed in test_fuzz_admin below
    ]


def test_the_document_covers_every_endpoint(served: tuple[str, Any]) -> None:
    _, document = served
    paths = set(document["paths"])
    assert {"/v1/chat", "/v1/chat/completions", "/v1/messages", "/v1/models", "/v1/stats"} <= paths
    assert "/admin/reload" in paths
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            declared = set(op["responses"])
            assert "422" not in declared, f"{method} {path}: the gateway never answers 422"
            if "requestBody" in op:
                assert "400" in declared, f"{method} {path} must declare its 400"
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert "$ref" in schema, f"{method} {path}: the body has no schema"


def _fuzz(base: str, document: dict[str, Any], method: str, path: str, mode: str) -> dict[int, int]:
    """Fuzz one operation; the statuses it answered, counted."""
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=base)
    operation = schema[path][method]
    seen: dict[int, int] = {}
    if mode == "negative" and not operation.body:
        return seen  # nothing to make invalid
    modes = {
        "positive": schemathesis.GenerationMode.POSITIVE,
        "negative": schemathesis.GenerationMode.NEGATIVE,
    }
    strategy = operation.as_strategy(generation_mode=modes[mode])

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, stream=st.booleans(), name=st.sampled_from([None, *NAMES]))
    def run(case: schemathesis.Case, stream: bool, name: str | None) -> None:
        if isinstance(case.body, dict):
            # Random names mostly miss (404); a known one takes the body through the tree.
            if name is not None:
                case.body = {**case.body, "route" if path == "/v1/chat" else "model": name}
            if stream and "stream" not in case.body:
                case.body = {**case.body, "stream": True}
        response = case.call(timeout=10)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            assert upstream_typed(response), (
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        case.validate_response(
            response,
            checks=[
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    run()
    # An operation without inputs has few distinct cases; one with a body must get many.
    wanted = EXAMPLES // 2 if operation.body else 1
    assert sum(seen.values()) >= wanted, seen
    return seen


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_answers_as_documented(served: tuple[str, Any], mode: str) -> None:
    base, document = served
    statuses: dict[int, int] = {}
    for method, path in operations(document):
        for status, count in _fuzz(base, document, method, path, mode).items():
            statuses[status] = statuses.get(status, 0) + count
    if mode == "positive":
        # The runs reached the routing tree, and through it the failing upstream.
        assert statuses.get(200, 0) > 50, statuses
        assert statuses.keys() & {502, 504, 529}, statuses
    else:
        assert statuses.get(400, 0) > 50, statuses
