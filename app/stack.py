"""`GatewayApp`: the gateway's FastAPI app, without the middleware layers that do nothing for it.

FastAPI puts two layers of its own around every request, whatever the app: one that reports
exceptions to FastAPI's native telemetry, and one that holds bodies to the app's
`max_body_size`. The gateway turns FastAPI's telemetry off (app/factory.py) and sets no FastAPI
body limit (its own limits are in app/edge.py), so for it each layer only passes the request
on: a coroutine a request for nothing. Both act on what a parent app put in the scope too, but
the gateway is always served as the top app (`llm-router serve`, `app.cli:app_from_env`).

Both classes live in FastAPI's private modules: where either is not found, or a layer is not
exactly as expected, the stack is left as FastAPI built it.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp

from routers.direct import DirectApp

try:
    from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
except ImportError:  # pragma: no cover - a FastAPI without native telemetry has no such layer
    ExceptionTelemetryMiddleware = None  # type: ignore[assignment,misc]
try:
    from fastapi._body_limit import AppBodyLimitMiddleware
except ImportError:  # pragma: no cover - a FastAPI without app body limits has no such layer
    AppBodyLimitMiddleware = None  # type: ignore[assignment,misc]

# FastAPI's `telemetry` argument that turns all its native telemetry off.
NO_TELEMETRY: dict[str, Any] = {"tracing": False, "metrics": False, "logs": False}


class GatewayApp(DirectApp):
    """The gateway's app: FastAPI with shortcuts to known chat routes (routers/direct.py), less
    the layers that its settings leave with nothing to do."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Known from our own arguments, not read back from FastAPI's private state.
        self._telemetry_off = kwargs.get("telemetry") == NO_TELEMETRY
        self._no_body_limit = kwargs.get("max_body_size") is None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return without_inert_layers(stack, self._telemetry_off, self._no_body_limit)


def without_inert_layers(stack: ASGIApp, telemetry_off: bool, no_body_limit: bool) -> ASGIApp:
    """`stack` (outermost first) with FastAPI's exception-telemetry layer left out where its
    telemetry is off, and its body-limit layer where it has no limit (its `app` is then the next
    layer itself, unwrapped)."""
    layer: Any = stack
    while (inner := getattr(layer, "app", None)) is not None:
        kind = type(inner)
        inert = (telemetry_off and kind is ExceptionTelemetryMiddleware) or (
            no_body_limit
            and kind is AppBodyLimitMiddleware
            and not isinstance(getattr(inner, "app", None), RequestBodyLimitMiddleware)
        )
        if inert and getattr(inner, "app", None) is not None:
            layer.app = inner.app
            continue
        layer = inner
    return stack
