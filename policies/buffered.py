"""Buffered streams: an all-or-nothing answer, with a clean restart on the next target.

With `buffer: true` a failover stream holds every event back until its target's stream has
finished. A stream that fails part-way (a cut, a stall, an error event, a body ending without its
finish) has sent the caller nothing, so the chain moves on exactly as for a failure before the
first token (retries included) and the next target answers from the start. The caller pays in
latency: the first event arrives when the whole answer is ready.
"""

from __future__ import annotations

from app.chat import StreamEvent, StreamFinish
from app.errors import ErrorKind, ProviderError
from app.routing import Call, Node


async def buffered(child: Node, call: Call) -> list[StreamEvent]:
    """Every event of `child`'s stream, once it has finished whole; else `ProviderError`."""
    events = child.stream(call)
    held: list[StreamEvent] = []
    try:
        async for event in events:
            held.append(event)
    except ProviderError:
        _nothing_delivered(call)
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    finish = held[-1] if held else None
    if not isinstance(finish, StreamFinish) or finish.truncated:
        _nothing_delivered(call)
        error = ProviderError(
            ErrorKind.SERVER_ERROR,
            "the provider's stream ended before its finish",
            model=finish.model if isinstance(finish, StreamFinish) else None,
        )
        for attempt in reversed(call.attempts):  # recorded as a success at its first event
            if attempt.target == child.label:
                attempt.ok, attempt.error, attempt.message = False, error.kind.value, error.message
                break
        raise error
    return held


def _nothing_delivered(call: Call) -> None:
    """The held events never reached the caller: the chain may still fail over."""
    call.output_started = False
    call.serving = None
    call.answer = None
