"""router.yaml: interpolation, typed validation, problems with paths, lines and suggestions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.config import ConfigError, interpolate, parse_config
from app.gateway import Gateway

GOOD = """\
server:
  api_keys: ["${ROUTER_API_KEY:-}"]
tracing:
  source: ${HH_SOURCE:-${ENVIRONMENT:-development}}
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY}"}
  sim: {type: simulated, latency_ms: {mean: 5, stddev: 1}, error_rate: {rate_limited: 0.1}}
models:
  fast: {provider: openai, model: gpt-4o-mini}
  smart: {provider: openai, model: gpt-4o, timeout_s: 30, input_price: 3, output_price: 12}
routes:
  default:
    failover:
      chain: [smart, fast, sim/echo]
      retries: 2
      retry_on: [rate_limited, timeout, server_error]
      circuit_breaker: {failures: 5, cooldown_s: 30}
  nested: {failover: [default, fast]}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    try:
        Gateway.build(parse_config(text, env=env if env is not None else {"OPENAI_API_KEY": "k"}))
    except ConfigError as error:
        return [str(p) for p in error.problems]
    return []


def test_good_config_loads_into_typed_models() -> None:
    config = parse_config(GOOD, env={"OPENAI_API_KEY": "sk-1", "ENVIRONMENT": "staging"})
    assert config.server.caller_keys() == []
    assert config.tracing.source == "staging"
    assert config.providers["openai"].api_key.get_secret_value() == "sk-1"
    assert "sk-1" not in repr(config)  # secrets never echo
    assert config.providers["sim"].error_rate == {"rate_limited": 0.1}
    assert config.models["smart"].timeout_s == 30
    gateway = Gateway.build(config)
    assert set(gateway.routes) == {"default", "nested"}
    # Bundled prices fill in what the alias leaves out; the alias's own prices win.
    fast = gateway.node_for("fast")
    assert (fast.model.input_price, fast.model.output_price) == (0.15, 0.60)
    assert gateway.node_for("smart").model.input_price == 3


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-${B:-deep}}", {}, "deep"),
        ("${A:-${B:-deep}}", {"B": "b"}, "b"),
        ("pre-${A}-post", {"A": "mid"}, "pre-mid-post"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("no refs", {}, "no refs"),
        ("${A:-}", {}, ""),
    ],
)
def test_interpolation(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env, []) == expected


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=50))
def test_text_without_references_is_unchanged(text: str) -> None:
    assert interpolate(text, {}, []) == text


def test_unset_variable_is_a_problem_with_its_path() -> None:
    found = problems(GOOD, env={})
    assert found == [
        "providers.openai.api_key (line 6): environment variable OPENAI_API_KEY is not set"
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # a misspelt alias in a route
        (
            ("chain: [smart, fast, sim/echo]", "chain: [smrat, fast, sim/echo]"),
            "routes.default.failover.chain.0 (line 14): unknown route, model alias or "
            "provider/model-id 'smrat'; did you mean 'smart'?",
        ),
        # a misspelt provider in an alias
        ("fast: {provider: openai,", "fast: {provider: opneai,"),
        # an unknown policy key
        (
            ("    failover:\n      chain", "    failuver:\n      chain"),
            "routes.default.failuver (line 13): unknown policy 'failuver'; "
            "did you mean 'failover'?",
        ),
        # a misspelt field
        (
            ("retries: 2", "retires: 2"),
            "routes.default.failover.retires (line 15): unknown field 'retires'; did you mean "
            "'retries'?",
        ),
        (
            ("api_keys:", "api_kyes:"),
            "server.api_kyes (line 2): unknown field 'api_kyes'; did you mean 'api_keys'?",
        ),
        (
            ("type: simulated", "type: simulatd"),
            "providers.sim.type (line 7): unknown provider type 'simulatd'; did you mean "
            "'simulated'?",
        ),
        (("timeout_s: 30,", "timeout_s: -1,"), "models.smart.timeout_s (line 10)"),
        (("sim/echo", "nobody/echo"), "unknown provider 'nobody' in 'nobody/echo'"),
        (("retry_on: [rate_limited,", "retry_on: [bad_request,"), "never retried"),
    ],
)
def test_broken_configs_name_the_place(edit, expected: str) -> None:
    if isinstance(edit, str):  # the provider typo case
        old, new = edit, edit.replace("openai", "opneai")
        expected = (
            "models.fast.provider (line 9): unknown provider 'opneai'; did you mean 'openai'?"
        )
    else:
        old, new = edit
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(expected in p for p in found), found


def test_cycles_and_clashes_are_refused() -> None:
    cyclic = GOOD.replace(
        "nested: {failover: [default, fast]}",
        "nested: {failover: [loop, fast]}\n  loop: {failover: [nested]}",
    )
    found = problems(cyclic)
    assert any("cycle: nested → loop → nested" in p for p in found), found
    clash = GOOD.replace("nested:", "fast:")
    assert any("'fast' is both a route and a model alias" in p for p in problems(clash))


def test_policy_node_needs_exactly_one_key() -> None:
    text = GOOD.replace(
        "nested: {failover: [default, fast]}", "nested: {failover: [fast], match: []}"
    )
    assert any("exactly one policy key" in p for p in problems(text))


def test_bad_yaml_reports_its_line() -> None:
    found = problems("providers:\n  sim: {type: simulated\nroutes: [\n")
    assert found == ["line 3: not valid YAML: expected ',' or '}', but got ':'"]


def test_yaml_cannot_construct_python_objects() -> None:
    found = problems("providers: !!python/object/apply:os.system ['echo pwned']\n")
    assert found and "not valid YAML" in found[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_validate_command(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "OPENAI_API_KEY": "sk-from-env"}
    ok = run_cli("validate", str(write(tmp_path, GOOD)), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    broken = GOOD.replace("[smart, fast,", "[smrat, fast,").replace(
        "failover:\n      chain", "failovr:\n      chain"
    )
    bad = run_cli("validate", str(write(tmp_path, broken)), env=env)
    assert bad.returncode == 1
    assert "unknown policy 'failovr'; did you mean 'failover'?" in bad.stderr
    assert "sk-from-env" not in bad.stderr + bad.stdout
    garbage = run_cli("validate", str(write(tmp_path, "routes: [\n")), env=env)
    assert garbage.returncode == 1 and "not valid YAML" in garbage.stderr
    missing = run_cli("validate", str(tmp_path / "nope.yaml"), env=env)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
