"""The test servers (tests/fakes/server.py) against a pooling client: no keep-alive race.

An HTTP/1.1 client pool reuses an idle connection until its own keep-alive expiry (httpx: 5 s,
counted from when it finished reading the last response); a server closes an idle connection
after its `timeout_keep_alive` (uvicorn: 5 s by default, counted from when it finished sending).
With the two equal, a client can send a request on a connection the server is closing: the
request lands in a socket the server then closes unread, the kernel answers with a reset, and
the client gets a ReadError for a request the app never saw. Under load (the chaos run on a
busy machine) the two clocks drift apart by a fraction of a second and it happens; here the
server's event loop is held across its keep-alive deadline instead, which does the same thing
deterministically.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

from tests.fakes.server import serve_app

CLIENT_KEEPALIVE_S = httpx.Limits().keepalive_expiry or 5.0  # what the chaos and soak clients use


class _App:
    """Answers every request with `ok`; remembers its event loop so the test can stall it."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.requests: list[tuple[str, int]] = []  # each request's client address

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    self.loop = asyncio.get_running_loop()
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.requests.append(scope["client"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_a_pooled_connection_the_client_still_holds_is_still_open_on_the_server() -> None:
    pytest.importorskip("uvloop")  # serve_app's loop (uvicorn's "auto"): due timers before I/O
    app = _App()
    with serve_app(app) as base:
        assert app.loop is not None

        async def drive() -> None:
            async with httpx.AsyncClient(base_url=base) as client:
                assert (await client.get("/")).text == "ok"
                idle_from = time.monotonic()  # the server's keep-alive clock started before this
                # Hold the server's loop across its own keep-alive deadline, as a starved thread
                # would be: when it runs again, its due timers run before it reads the socket.
                await asyncio.sleep(CLIENT_KEEPALIVE_S - 1.5)
                held = threading.Event()
                wake, waker = socket.socketpair()

                def hold() -> None:  # an I/O callback on the server's loop: as busy as it gets
                    wake.recv(1)
                    app.loop.remove_reader(wake.fileno())
                    held.set()
                    time.sleep(2.5)

                app.loop.call_soon_threadsafe(app.loop.add_reader, wake.fileno(), hold)
                waker.send(b"!")
                assert await asyncio.to_thread(held.wait, 5)
                wake.close()
                waker.close()
                # Then, while the server is still held, reuse the connection inside the expiry.
                idle = time.monotonic() - idle_from
                await asyncio.sleep(max(0.0, CLIENT_KEEPALIVE_S - 1.0 - idle))
                assert time.monotonic() - idle_from < CLIENT_KEEPALIVE_S  # the pool reuses it
                response = await client.get("/")
                assert response.text == "ok"

        asyncio.run(drive())
    first, second = app.requests
    assert first == second  # one connection, reused
