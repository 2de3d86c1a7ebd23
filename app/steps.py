"""Taking the next item of an async iterator without waiting, when it is already at hand.

A stream often has several items ready at once (one network read carries a provider's whole
burst of chunks). `first_step` takes the first step of `anext(iterator)` by hand: the item, if it
came without suspending, or the half-done step and what it is waiting on. The caller may then do
something else (write what it has collected) before it waits, with `Resumed` — and if that
something else fails, `Thrown` hands the failure to the half-done step, so that the iterator
unwinds from where it waits (its `finally` blocks run) rather than being left suspended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

_WAITING = object()


def first_step(iterator: AsyncIterator[Any]) -> tuple[Any, Any, Any]:
    """(item, None, None) when the next item came at once; (WAITING, step, pending) when it
    must be waited for (`await Resumed(step, pending)`). Raises StopAsyncIteration at the end."""
    step = anext(iterator).__await__()
    try:
        pending = step.send(None)
    except StopIteration as ready:
        return ready.value, None, None
    return _WAITING, step, pending


WAITING: Any = _WAITING


class Resumed:
    """Awaits `step` (an awaitable's `__await__` iterator), whose first step was taken by hand and
    suspended on `pending`: what `await` would have done from there, every value or exception the
    task sends in going on to `step`."""

    __slots__ = ("_pending", "_step")

    def __init__(self, step: Any, pending: Any) -> None:
        self._step = step
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        return _drive(self._step, self._pending)


class Thrown:
    """Awaits `step` (suspended, as for `Resumed`) after throwing `exc` into it: the awaitable
    unwinds from where it waits, awaiting what its cleanup needs; then `exc` is raised (or what
    the cleanup raised instead)."""

    __slots__ = ("_exc", "_step")

    def __init__(self, step: Any, exc: BaseException) -> None:
        self._step = step
        self._exc = exc

    def __await__(self) -> Generator[Any, Any, Any]:
        step, exc = self._step, self._exc
        try:
            pending = step.throw(exc)
        except StopIteration:
            raise exc from None
        yield from _drive(step, pending)
        raise exc


def _drive(step: Any, pending: Any) -> Generator[Any, Any, Any]:
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:  # a cancellation (a timer's, or the caller's)
            try:
                pending = step.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = step.send(sent)
            except StopIteration as done:
                return done.value
