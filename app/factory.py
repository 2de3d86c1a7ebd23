"""The app factory: `create_app(config)` wires a gateway to the HTTP routers. No global state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import __version__
from app.config import RouterConfig
from app.gateway import Gateway
from app.limits import BodyLimit
from routers import anthropic_compat, chat, errors, health, openai_compat


def create_app(config: RouterConfig) -> FastAPI:
    """Build the gateway (raising ConfigError on a bad config) and the app that serves it."""
    gateway = Gateway.build(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await app.state.gateway.aclose()

    # strict_content_type off: a JSON body is read as JSON whatever Content-Type the caller sent
    # (curl -d, for one, sends a form type), as the providers' own APIs do.
    app = FastAPI(
        title="llm-router", version=__version__, lifespan=lifespan, strict_content_type=False
    )
    app.state.gateway = gateway
    app.state.draining = False
    app.add_middleware(BodyLimit, limit=lambda: app.state.gateway.config.server.max_body_bytes)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(openai_compat.router)
    app.include_router(anthropic_compat.router)
    return app
