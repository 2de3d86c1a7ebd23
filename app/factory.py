"""The app factory: `create_app(config)` wires a gateway to the HTTP routers. No global state."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app import __version__
from app.config import RouterConfig, load_config
from app.edge import Edge
from app.gateway import Gateway
from app.gcstats import serving_gc
from app.lifecycle import InFlight, signal_handlers
from app.reload import Loader, Reloader
from app.stack import NO_TELEMETRY, GatewayApp
from app.telemetry import Telemetry
from app.tracing import Tracing
from routers import (
    admin,
    anthropic_compat,
    chat,
    console,
    errors,
    health,
    openai_compat,
    ops,
    schemas,
)

# FastAPI's own telemetry off: the gateway traces and counts its requests itself
# (app/edge.py); FastAPI's would only add its spans and metrics beside those
# wherever a process-wide OpenTelemetry provider is set, and costs every request a look at the
# global providers even where none is. (A FastAPI without native telemetry has no such option.)
_NO_FASTAPI_TELEMETRY: dict[str, Any] = (
    {"telemetry": NO_TELEMETRY} if "telemetry" in inspect.signature(FastAPI).parameters else {}
)


def create_app(config: RouterConfig, reload: Loader | None = None) -> FastAPI:
    """Build the gateway (raising ConfigError on a bad config) and the app that serves it.

    `reload` re-reads the config for SIGHUP and `POST /admin/reload`; by default the file the
    config came from, if it came from one."""
    # Tracing first: the SDK instrumentors only see clients constructed after them.
    tracing = Tracing.start(config.tracing, config.providers)
    try:
        gateway = Gateway.build(config, tracing.route_tracer)
    except BaseException:
        tracing.shutdown(timeout_s=0)
        raise
    if reload is None and config.source and Path(config.source).is_file():
        source = config.source
        reload = lambda: load_config(source)  # noqa: E731

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reloader: Reloader = app.state.reloader
        gc_pauses = app.state.telemetry.metrics.gc_pauses
        gc_pauses.install()
        try:
            with serving_gc(), signal_handlers(app.state, reloader.on_signal):
                yield
        finally:
            gc_pauses.uninstall()
            await reloader.aclose()
            await app.state.gateway.aclose()
            tracing.shutdown()

    # strict_content_type off: a body sent without a Content-Type is read as JSON. One declared
    # as another type (curl -d sends a form type) is refused, as OpenAI's API refuses it, with a
    # message that says so (routers/errors.py).
    # GatewayApp: FastAPI, where the chat endpoints' ordinary requests skip routing once their
    # route is known (routers/direct.py), less the layers these settings leave idle (app/stack.py).
    app = GatewayApp(
        title="llm-router",
        version=__version__,
        lifespan=lifespan,
        strict_content_type=False,
        **_NO_FASTAPI_TELEMETRY,
    )
    app.state.gateway = gateway
    app.state.draining = False
    app.state.tracing = tracing
    app.state.inflight = InFlight()
    app.state.reloader = Reloader(app.state, reload)
    app.state.telemetry = Telemetry(lambda: app.state.gateway)
    # Each request's span and record; refused while draining, else held to the header and body
    # limits (even a refused body or a draining refusal gets its span).
    app.add_middleware(Edge, state=app.state, telemetry=app.state.telemetry)
    errors.install(app)
    # Routes are matched in the order they are included: the chat endpoints, which take nearly
    # all the traffic, first (no two routers share a path, so the order decides nothing else).
    app.include_router(openai_compat.router)
    app.include_router(chat.router)
    app.include_router(health.router)
    app.include_router(anthropic_compat.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    schemas.install(app)  # the OpenAPI document declares what the endpoints really answer
    return app
