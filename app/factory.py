"""The app factory: `create_app(config)` wires a gateway to the HTTP routers. No global state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import __version__
from app.config import RouterConfig
from app.gateway import Gateway
from app.limits import BodyLimit
from app.tracing import Tracing
from app.tracing_http import RequestSpans
from routers import chat, errors, health, openai_compat


def create_app(config: RouterConfig) -> FastAPI:
    """Build the gateway (raising ConfigError on a bad config) and the app that serves it."""
    # Tracing first: the SDK instrumentors only see clients constructed after them.
    tracing = Tracing.start(config.tracing, config.providers)
    try:
        gateway = Gateway.build(config, tracing.route_tracer)
    except BaseException:
        tracing.shutdown(timeout_s=0)
        raise

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await app.state.gateway.aclose()
            tracing.shutdown()

    # strict_content_type off: a JSON body is read as JSON whatever Content-Type the caller sent
    # (curl -d, for one, sends a form type), as the providers' own APIs do.
    app = FastAPI(
        title="llm-router", version=__version__, lifespan=lifespan, strict_content_type=False
    )
    app.state.gateway = gateway
    app.state.draining = False
    app.state.tracing = tracing
    app.add_middleware(BodyLimit, limit=lambda: app.state.gateway.config.server.max_body_bytes)
    # Added last, so outermost: even a refused body gets its span and x-trace-id.
    app.add_middleware(RequestSpans, tracer=lambda: app.state.gateway.tracer)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(openai_compat.router)
    return app
