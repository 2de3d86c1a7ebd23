"""Shared fixtures: provider fakes and gateways, each served on a loopback port of its own."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from app.config import parse_config
from app.factory import create_app
from tests.fakes.openai_fake import OpenAIFake
from tests.fakes.server import serve_app
from tests.tracing_helpers import collector, traced  # noqa: F401  (fixtures)

pytest_plugins = ["tests.procs"]  # gateway processes and a shared Redis


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def openai_fake(stack: ExitStack) -> tuple[OpenAIFake, str]:
    fake = OpenAIFake()
    url = stack.enter_context(serve_app(fake.app))
    return fake, url


@pytest.fixture
def serve_gateway(stack: ExitStack) -> Callable[..., str]:
    """Serve a gateway built from YAML text (with `env` for its ${VARS}); returns its base URL."""

    def serve(text: str, env: dict[str, str] | None = None) -> str:
        config = parse_config(text, env=env or {})
        return stack.enter_context(serve_app(create_app(config)))

    return serve


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON data of every server-sent event in a response body."""
    events = []
    for block in response.text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
    return events
