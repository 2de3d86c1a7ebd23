"""Shared fixtures: provider fakes and gateways, each served on a loopback port of its own."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings

from app.config import parse_config
from app.factory import create_app
from tests.fakes.openai_fake import OpenAIFake
from tests.fakes.server import serve_app
from tests.tracing_helpers import collector, traced  # noqa: F401  (fixtures)

pytest_plugins = ["tests.procs"]  # gateway processes and a shared Redis

# No per-example deadline: the properties here are about results, not speed, and on a loaded
# machine (two workers, CI) an example that builds a routing tree can take 400 ms once and 100 ms
# on its replay, which hypothesis reports as a flaky failure.
settings.register_profile("llm-router", deadline=None)
settings.load_profile("llm-router")


# ---- running on several workers (pytest-xdist; `make test` uses two) --------------------------
#
# `--dist loadfile` keeps each module on one worker: a module-scoped fixture (a build, a browser,
# a soak run, replicas) is set up once and its tests keep their order, as when run alone. The
# queue follows the collection order (--no-loadscope-reorder), which is set here: the `alone`
# modules first, then those with module-scoped fixtures (where the long setups are), then the
# rest, so that no long module is left to start at the end.
#
# Tests marked `alone` (timing bounds measured under load: the soak, the chaos run) run while no
# other test runs on any worker: a readers-writer lock over a file of this run's own, with a
# turnstile so that the writer is not starved.


def _alone(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


def _module_scoped(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info else ()
    return any(d.scope in ("module", "package", "session") for fds in defs for d in fds)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):
        return
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        mine = 0 if _alone(item) else 1 if _module_scoped(item) else 2
        rank[module] = min(rank.get(module, 2), mine)
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


class _RunLock:
    """Shared for ordinary tests, exclusive for `alone` ones; across this run's workers only."""

    def __init__(self, folder: Path) -> None:
        self.gate = os.open(folder / "alone.gate", os.O_RDWR | os.O_CREAT, 0o600)
        self.main = os.open(folder / "alone.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self.exclusive = False

    def enter(self, alone: bool) -> None:
        if alone:
            if not self.exclusive:
                fcntl.flock(self.gate, fcntl.LOCK_EX)  # no new reader passes from here on
                fcntl.flock(self.main, fcntl.LOCK_EX)  # the readers inside finish
                self.exclusive = True
        else:
            fcntl.flock(self.gate, fcntl.LOCK_EX)
            fcntl.flock(self.gate, fcntl.LOCK_UN)
            fcntl.flock(self.main, fcntl.LOCK_SH)

    def leave(self, keep: bool) -> None:
        if self.exclusive and keep:
            return
        fcntl.flock(self.main, fcntl.LOCK_UN)
        if self.exclusive:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
            self.exclusive = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if not hasattr(item.config, "workerinput"):
        yield
        return
    if _LOCK not in item.config.stash:
        # Each worker's basetemp is popen-gwN inside the run's own: the files sit beside them.
        worker_tmp = item.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        item.config.stash[_LOCK] = _RunLock(worker_tmp.parent)
    lock = item.config.stash[_LOCK]
    lock.enter(_alone(item))
    try:
        yield
    finally:
        lock.leave(keep=_alone(item) and _alone(nextitem))


_LOCK = pytest.StashKey[_RunLock]()


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


@pytest.fixture
def aiohttp_sends(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every `AiohttpSend.send` made during the test, as its `stream` argument, in order."""
    from providers.aiohttp_send import AiohttpSend

    sent: list[bool] = []
    real = AiohttpSend.send

    async def recorded(self: AiohttpSend, *args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs.get("stream", False))
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(AiohttpSend, "send", recorded)
    return sent


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON data of every server-sent event in a response body."""
    events = []
    for block in response.text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
    return events
