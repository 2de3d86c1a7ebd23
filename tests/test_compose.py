"""compose.yaml: valid against the Compose Specification's schema, and its parts fit together.

The schema is the one check-jsonschema ships (vendored from compose-spec, Apache-2.0); it is
applied here with jsonschema directly. The example application is run against a real gateway.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from app.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "sidecar-app" / "app.py"


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_file_is_valid_against_the_compose_specification(compose: dict) -> None:
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c["services"]["redis"].update(replica=2),  # misspelt key
        lambda c: c["services"]["redis"].update(restart=["always"]),  # wrong type
        lambda c: c.update(service=c.pop("services")),  # misspelt top-level key
    ],
)
def test_the_schema_check_catches_mistakes(compose: dict, break_it: Callable[[dict], Any]) -> None:
    broken = copy.deepcopy(compose)
    break_it(broken)
    assert schema_errors(broken)


def gateways(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == "llm-router:local"}


def test_two_gateway_sidecars_share_redis_and_send_traces_to_jaeger(compose: dict) -> None:
    services = compose["services"]
    routers = gateways(compose)
    assert len(routers) == 2
    apps = set()
    for name, router in routers.items():
        assert router["build"] == "."
        # A sidecar: in its application's network namespace, so the app calls 127.0.0.1.
        mode, _, app = router["network_mode"].partition(":")
        assert mode == "service" and app in services, name
        assert services[app]["environment"]["ROUTER_URL"] == "http://127.0.0.1:8080"
        assert any(p.endswith(":8080") for p in services[app]["ports"])
        apps.add(app)
        # Its config, mounted where the image reads it, validates with the service's environment.
        source, target, *_ = router["volumes"][0].split(":")
        assert target == "/etc/llm-router/router.yaml"
        env = {k: str(v) for k, v in router["environment"].items() if "${" not in str(v)}
        config = parse_config((ROOT / source).read_text(), env=env)
        assert config.state.backend == "redis"
        redis = urlparse(config.state.url)
        assert redis.hostname in services and "redis" in services[redis.hostname]["image"]
        assert config.tracing.exporter == "otlp"
        collector = urlparse(config.tracing.endpoint)
        assert collector.hostname in services and collector.port == 4318
        viewer = services[collector.hostname]
        assert viewer["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
        assert set(router["depends_on"]) == {redis.hostname, collector.hostname}
    assert len(apps) == 2, "each application replica has a gateway of its own"
    for app in apps:
        mounted = services[app]["volumes"][0].split(":")[0]
        assert (ROOT / mounted).resolve() == APP


def run_app(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(APP), *args],
        env={"ROUTER_URL": base, "READY_TIMEOUT_S": "5", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_application_asks_the_gateway(serve_gateway: Callable[..., str]) -> None:
    base = serve_gateway((ROOT / "deploy" / "router.yaml").read_text())
    done = run_app(base, "--once", "Write a haiku about rain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("sim/sim-smart in ")

    failed = run_app(base, "--once", "hello", "--route", "no-such-route")
    assert failed.returncode == 1
    assert "gateway error 404: unknown route or model 'no-such-route'" in failed.stdout
