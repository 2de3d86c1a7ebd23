"""Hedged streams: when the first token is late, ask the next target too, and keep the faster.

With `hedge: true` and `first_token_timeout_s`, a failover stream's first-token deadline no longer
abandons the target that missed it: the next target in the chain (whose breaker lets a call
through) is started alongside, and whichever delivers a first event first wins. The other is
cancelled at once: its connection closed, its usage never billed (only the winner's finish is).
At most two requests are in flight at any time; a target that fails is replaced by the next in
the chain, as without hedging. A hedged chain does not retry a target (the hedge is its retry).

The `hedge` decision records each hedge: which target was late, which was started after how long,
and which won; the failover decision records the attempts as usual.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from app.chat import StreamEvent
from app.errors import ErrorKind, ProviderError
from app.routing import Attempt, Call, Node, Target

Opened = tuple[int, AsyncIterator[StreamEvent], StreamEvent]


@dataclass
class _Flight:
    index: int
    events: AsyncIterator[StreamEvent]
    task: asyncio.Task[StreamEvent]
    started: float
    hedged: bool = False  # this flight's deadline has already started a hedge


@dataclass
class Hedging:
    """What hedging needs of the failover policy it serves."""

    nodes: list[Node]
    path: str
    deadline_s: float
    allowed: Callable[[int], Awaitable[bool]]
    verdict: Callable[[int, ProviderError | None], Awaitable[None]]
    hedges: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


async def open_hedged(hedging: Hedging, call: Call) -> Opened:
    """The first target to deliver a first event: (its index, its stream, that event)."""
    saved = call.stream_limits
    # The deadline starts a hedge; each target's own limit (its alias's) still ends a wait.
    call.stream_limits = replace(saved, first_token_s=None)
    flights: list[_Flight] = []
    candidates = iter(range(len(hedging.nodes)))
    last: ProviderError | None = None

    async def launch() -> _Flight | None:
        for index in candidates:
            if not await hedging.allowed(index):  # never hedge into an open breaker
                hedging.skipped.append(
                    {"target": hedging.nodes[index].label, "skipped": "circuit_open"}
                )
                continue
            events = hedging.nodes[index].stream(call)
            flight = _Flight(index, events, asyncio.ensure_future(anext(events)), time.monotonic())
            flights.append(flight)
            return flight
        return None

    try:
        await launch()
        while flights:
            waiting = [f for f in flights if not f.hedged]
            timeout = None
            if len(flights) == 1 and waiting:
                timeout = max(0.0, waiting[0].started + hedging.deadline_s - time.monotonic())
            done, _ = await asyncio.wait(
                [f.task for f in flights], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the first token is late: hedge
                late = flights[0]
                late.hedged = True
                hedge = await launch()
                hedging.hedges.append(
                    {
                        "late": hedging.nodes[late.index].label,
                        "after_ms": round((time.monotonic() - late.started) * 1000, 1),
                        "hedge": hedging.nodes[hedge.index].label if hedge else None,
                    }
                )
                continue
            for flight in [f for f in flights if f.task in done]:
                flights.remove(flight)
                try:
                    first = flight.task.result()
                except (ProviderError, StopAsyncIteration) as exc:
                    await flight.events.aclose()  # type: ignore[attr-defined]
                    error = _as_error(exc)
                    await hedging.verdict(flight.index, error)
                    last = error
                    if error.kind.client_fault:
                        raise error from None
                    continue
                for hedge in hedging.hedges:
                    hedge.setdefault("won", hedging.nodes[flight.index].label)
                await _cancel(flights, hedging, call, lost=True)
                await hedging.verdict(flight.index, None)
                return flight.index, flight.events, first
            if not flights:
                await launch()  # both failed (or the only one): the next in the chain
    finally:
        call.stream_limits = saved
        await _cancel(flights, hedging, call, lost=False)
    raise last or ProviderError(ErrorKind.SERVER_ERROR, "no target is available (circuit open)")


async def _cancel(flights: list[_Flight], hedging: Hedging, call: Call, lost: bool) -> None:
    """Close the other streams' connections: a task still waiting is cancelled, a stream that
    has its first event too is closed; nothing of it reaches the caller or the bill."""
    for flight in list(flights):
        flights.remove(flight)
        flight.task.cancel()
        await asyncio.gather(flight.task, return_exceptions=True)
        await flight.events.aclose()  # type: ignore[attr-defined]
        if lost:
            _lost(hedging.nodes[flight.index], call, flight.started)
            hedging.hedges.append({"cancelled": hedging.nodes[flight.index].label})


def _lost(node: Node, call: Call, started: float) -> None:
    """The attempt of a stream that lost the hedge: recorded as cancelled, never a success."""
    for attempt in reversed(call.attempts):
        if attempt.target == node.label and attempt.ok:  # it had its first event too
            attempt.ok, attempt.error, attempt.message = False, "cancelled", "lost the hedge"
            return
    if isinstance(node, Target):
        call.attempts.append(
            Attempt(
                target=node.name,
                provider=node.provider.name,
                model=node.model.model,
                ok=False,
                latency_ms=(time.monotonic() - started) * 1000,
                error="cancelled",
                message="lost the hedge",
            )
        )


def _as_error(exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(ErrorKind.SERVER_ERROR, "the stream ended before any event")
