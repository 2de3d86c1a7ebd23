"""Run an ASGI app (a provider fake, or the gateway itself) on a loopback port the OS picks."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

# How long an idle keep-alive connection stays open. Well past any test client's pool expiry
# (httpx and the SDKs' clients: 5 s): were the two equal (uvicorn's default is 5 s), a client
# could send a request on a connection the server was closing that moment, and get a reset
# (httpx.ReadError) for a request no app ever saw. On a loaded machine the two 5 s clocks
# drift apart by a fraction of a second and that happens (tests/test_fakes_server.py).
KEEP_ALIVE_S = 60


@contextlib.contextmanager
def serve_app(app, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` in a background thread; yield its base URL (``http://127.0.0.1:PORT``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
