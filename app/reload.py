"""Hot reload: re-read the config, build a new gateway, swap it in atomically.

A config that does not validate (or whose providers cannot start, or whose routes do not
compile) is refused with every problem, and the old gateway keeps serving. On success the new
gateway serves every request that arrives from then on; requests already in flight finish on
the old one, whose providers are closed once they have (or after `server.drain_timeout_s`).
The state store (limits, budgets, breakers) is kept when `state:` did not change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.datastructures import State

from app.config import ConfigError, Problem, RouterConfig
from app.gateway import Gateway
from app.lifecycle import InFlight

log = logging.getLogger("llm_router")

Loader = Callable[[], RouterConfig]


class Reloader:
    def __init__(self, state: State, load: Loader | None) -> None:
        self.state = state
        self.load = load
        self._lock = asyncio.Lock()
        self._retiring: dict[Gateway, asyncio.Task[None]] = {}

    async def reload(self) -> Gateway:
        """Swap in a gateway built from the config as it is now; ConfigError when it is bad."""
        if self.load is None:
            raise ConfigError([Problem("", "this gateway was not started from a config file")])
        async with self._lock:
            config = self.load()
            old: Gateway = self.state.gateway
            keep = config.state == old.config.state
            # Tracing is set up once per process: the new gateway traces through the same tracer.
            new = Gateway.build(config, old.tracer, state=old.state if keep else None)
            if keep:
                old.owns_state = False
            self.state.gateway = new  # one assignment: each request reads it once
            self._retiring[old] = asyncio.get_running_loop().create_task(self._retire(old))
        log.warning(
            "config reloaded from %s: %d providers, routes: %s",
            config.source or "the environment",
            len(new.providers),
            ", ".join(new.routes) or "none",
        )
        return new

    async def _retire(self, old: Gateway) -> None:
        inflight: InFlight = self.state.inflight
        try:
            await inflight.wait_idle(old, old.config.server.drain_timeout_s)
        finally:
            self._retiring.pop(old, None)
            await old.aclose()

    def on_signal(self) -> None:
        """SIGHUP: reload in the background and log what happened."""
        asyncio.get_running_loop().create_task(self._logged())

    async def _logged(self) -> None:
        try:
            await self.reload()
        except ConfigError as error:
            log.error(
                "SIGHUP: the new config is refused (%d problem(s)); the old one keeps serving",
                len(error.problems),
            )
            for problem in error.problems:
                log.error("  %s", problem)

    async def aclose(self) -> None:
        """At shutdown: close gateways still waiting to retire."""
        tasks = list(self._retiring.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
