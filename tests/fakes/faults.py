"""Upstream faults, injected in front of any provider fake: the chaos suite's bad network day.

`FaultInjector` wraps a fake's ASGI app. For each request it draws, from a seeded generator,
whether to pass it through untouched or to fail it in one of the ways real upstreams fail:

- `429_retry_after` / `429`: rate limited, with a `Retry-After` header or without one;
- `500` / `503`: a server error;
- `reset`: the TCP connection is reset before any header (RST, not a clean close);
- `silence`: the request is accepted and never answered;
- `stall`: the answer starts, then stops mid-body without ending (streams: after the first
  chunk); `cut`: the answer starts, then the connection is reset mid-body.

Every request is logged (`Hit`) with the tag found in its body (the chaos client puts a unique
`chaos-N` in each prompt), the fault drawn and its timing, so a test can hold the gateway's
`decisions` against what the upstream actually saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FAULTS = ("429_retry_after", "429", "500", "503", "reset", "silence", "stall", "cut")
TAG = re.compile(rb"chaos-\d+")


@dataclass
class Hit:
    provider: str
    tag: str | None
    fault: str | None  # None: passed through to the fake
    started: float
    ended: float | None = None


@dataclass
class FaultInjector:
    app: ASGIApp
    provider: str
    rate: float = 0.3  # the share of requests that get a fault
    faults: tuple[str, ...] = FAULTS
    retry_after: str = "0"  # the Retry-After value a `429_retry_after` carries
    hold_s: float = 30.0  # how long silence and stalls last (the gateway gives up first)
    seed: int = 0
    log: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def by_tag(self) -> dict[str | None, list[Hit]]:
        with self._lock:
            hits = list(self.log)
        grouped: dict[str | None, list[Hit]] = {}
        for hit in hits:
            grouped.setdefault(hit.tag, []).append(hit)
        return grouped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        found = TAG.search(body)
        with self._lock:
            fault = self._rng.choice(self.faults) if self._rng.random() < self.rate else None
            hit = Hit(self.provider, found.group().decode() if found else None, fault, time.time())
            self.log.append(hit)
        try:
            await self._answer(fault, body, scope, _replay(body, receive), send)
        finally:
            hit.ended = time.time()

    async def _answer(
        self, fault: str | None, body: bytes, scope: Scope, replay: Receive, send: Send
    ) -> None:
        if fault is None:
            await self.app(scope, replay, send)
        elif fault in ("429_retry_after", "429", "500", "503"):
            status = int(fault[:3])
            headers = {"retry-after": self.retry_after} if fault == "429_retry_after" else {}
            await _error(send, status, headers)
        elif fault == "reset":
            _reset(send)
        elif fault == "silence":
            await _hold(replay, self.hold_s)
        else:  # stall, cut: let the answer begin, then break it
            await self.app(scope, replay, _Breaking(send, replay, fault, self.hold_s))


class _Breaking:
    """A `send` that lets the response start and its first body chunk through, then stalls
    (holds the connection open, silent) or cuts (resets the connection); what the fake sends
    after that is dropped."""

    def __init__(self, send: Send, receive: Receive, fault: str, hold_s: float) -> None:
        self.send = send
        self.receive = receive
        self.fault = fault
        self.hold_s = hold_s
        self.chunks = 0
        self.broken = False

    async def __call__(self, message: Message) -> None:
        if self.broken:
            return
        if message["type"] == "http.response.body":
            self.chunks += 1
            if self.chunks > 1 or not message.get("more_body", False):
                # Past the first chunk (or a whole body in one, then sent cut in half): the
                # answer breaks before it is complete.
                self.broken = True
                if self.chunks == 1:
                    body = message.get("body", b"")
                    await self.send({**message, "body": body[: len(body) // 2], "more_body": True})
                if self.fault == "cut":
                    _reset(self.send)
                else:
                    await _hold(self.receive, self.hold_s)
                return
        await self.send(message)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the connection's own messages (a client's disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _hold(receive: Receive, seconds: float) -> None:
    """Say nothing until the client hangs up, or `seconds` pass."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass


async def _error(send: Send, status: int, headers: dict[str, str]) -> None:
    kinds = {429: "rate_limit_error", 500: "api_error", 503: "overloaded_error"}
    payload = {
        "type": "error",  # Anthropic reads this shape; OpenAI SDKs read `error` alone
        "error": {"type": kinds[status], "message": f"chaos {status}", "code": None},
    }
    data = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _reset(send: Any) -> None:
    """Reset the connection under this request (uvicorn: `send` is bound to its protocol
    cycle, which holds the transport): linger 0 then abort, so the peer sees an RST."""
    cycle = getattr(send, "__self__", None)
    while cycle is not None and not hasattr(cycle, "transport"):
        cycle = getattr(getattr(cycle, "send", None), "__self__", None)
    if cycle is None:
        raise RuntimeError("cannot reach the connection to reset it")
    transport = cycle.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
