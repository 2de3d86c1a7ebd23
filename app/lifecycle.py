"""The process's life: requests in flight, graceful shutdown on SIGTERM, reload on SIGHUP.

The gateway's ASGI middleware (`Edge`, app/edge.py) pins each request to the gateway serving when
it arrived (a reload swaps in a new one; the request finishes on its own) and counts it in
flight (`InFlight`) until its response, stream included, has been sent. While draining it
refuses new requests with 503. It also holds each request to that gateway's header and body
limits (`app/limits.py`).

On SIGTERM: readiness turns false and new requests are refused at once; requests and streams in
flight get up to `server.drain_timeout_s` to finish; then the signal goes on to the HTTP server
(uvicorn), which closes its connections and exits. A second SIGTERM skips the wait. SIGHUP
reloads the config (`app/reload.py`). Other signals stay the server's (SIGINT stops at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.datastructures import State

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger("llm_router")

PIN = "llm_router.gateway"
# Answered while draining: probes must see the truth, scrapers the last numbers.
ALWAYS = frozenset({"/healthz", "/readyz", "/metrics"})


def pinned_gateway(scope: MutableMapping[str, Any]) -> Gateway | None:
    return scope.get(PIN)


class InFlight:
    """Requests in flight, per gateway (a reload retires the old one once its count is 0)."""

    def __init__(self) -> None:
        self._counts: dict[Gateway, int] = {}

    def enter(self, gateway: Gateway) -> None:
        self._counts[gateway] = self._counts.get(gateway, 0) + 1

    def leave(self, gateway: Gateway) -> None:
        left = self._counts.get(gateway, 1) - 1
        if left > 0:
            self._counts[gateway] = left
        else:
            self._counts.pop(gateway, None)

    def count(self, gateway: Gateway | None = None) -> int:
        if gateway is None:
            return sum(self._counts.values())
        return self._counts.get(gateway, 0)

    async def wait_idle(self, gateway: Gateway | None, timeout_s: float) -> bool:
        """Wait until nothing (for `gateway`, or at all) is in flight; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.count(gateway):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True


class Drain:
    """SIGTERM: stop taking requests, let those in flight finish, then let the server exit."""

    def __init__(self, state: State, hand_over: Callable[[], None]) -> None:
        self.state = state
        self.hand_over = hand_over
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is not None:  # asked twice: stop waiting
            self.task.cancel()
            return
        self.state.draining = True
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        timeout_s = self.state.gateway.config.server.drain_timeout_s
        inflight: InFlight = self.state.inflight
        log.warning(
            "SIGTERM: not ready, refusing new requests; %d in flight get up to %gs",
            inflight.count(),
            timeout_s,
        )
        try:
            if await inflight.wait_idle(None, timeout_s):
                log.warning("drained: every request in flight has finished; exiting")
            else:
                log.warning("drain deadline passed with %d in flight; exiting", inflight.count())
        finally:
            self.hand_over()


@contextlib.contextmanager
def signal_handlers(state: State, reload: Callable[[], None]) -> Iterator[None]:
    """SIGTERM drains, SIGHUP reloads, for as long as the app runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # served from a thread (tests): signals are not ours to take
        return
    loop = asyncio.get_running_loop()
    prior = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def hand_over() -> None:
        # The server's own SIGTERM handler (uvicorn: close connections, run shutdown, exit).
        signal.signal(signal.SIGTERM, prior[signal.SIGTERM])
        signal.raise_signal(signal.SIGTERM)

    drain = Drain(state, hand_over)
    signal.signal(signal.SIGTERM, lambda sig, frame: loop.call_soon_threadsafe(drain.start))
    signal.signal(signal.SIGHUP, lambda sig, frame: loop.call_soon_threadsafe(reload))
    try:
        yield
    finally:
        for sig, handler in prior.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
