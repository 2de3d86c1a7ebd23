"""The gateway's error taxonomy in Anthropic's dialect, for `/v1/messages` only.

Anthropic SDKs choose their exception class from the status (and read `error.type`), so every
`RouterError` is mapped here, in one function, to the status and type Anthropic's own API would
use. The gateway's code and the failed attempts travel in `error.details` (`error_code` is where
the SDK looks for a stable code). The other endpoints keep SPEC's OpenAI-shaped envelope: this
module is wired in by the route class of the Anthropic router, not app-wide.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from app.errors import ErrorKind, InternalError, RouterError
from routers.errors import http_error, invalid_request_of

log = logging.getLogger("llm_router")

# SPEC's error type -> (status, Anthropic error type). Anthropic has no 502 or 503: an upstream
# that failed is reported as Anthropic reports its own trouble.
_BY_TYPE: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "budget_exceeded": (402, "billing_error"),
    "not_found": (404, "not_found_error"),
    "payload_too_large": (413, "request_too_large"),
    "rate_limited": (429, "rate_limit_error"),
    "internal": (500, "api_error"),
    "upstream_error": (500, "api_error"),
    "upstream_timeout": (504, "timeout_error"),
    "unavailable": (529, "overloaded_error"),
}
# Upstreams that were overloaded (failing or throttling, worth a retry later) read as overload.
_OVERLOADED_CODES = frozenset({ErrorKind.SERVER_ERROR.value, ErrorKind.RATE_LIMITED.value})


def anthropic_error(error: RouterError) -> tuple[int, dict[str, Any]]:
    """(status, body) for any gateway error, as Anthropic's API would answer it."""
    status, kind = _BY_TYPE.get(error.type, (500, "api_error"))
    if error.type == "upstream_error" and error.code in _OVERLOADED_CODES:
        status, kind = 529, "overloaded_error"
    details: dict[str, Any] = {"error_code": error.code, "router_error": error.type}
    details.update(error.details)
    body = {"type": "error", "error": {"type": kind, "message": error.message, "details": details}}
    return status, body


def anthropic_error_response(error: RouterError) -> JSONResponse:
    status, body = anthropic_error(error)
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after)))
    return JSONResponse(body, status_code=status, headers=headers)


class AnthropicRoute(APIRoute):
    """A route whose every failure (validation, auth, routing, a bug) answers in Anthropic's
    error shape, before the app-wide handlers would answer in OpenAI's."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except RouterError as error:
                return anthropic_error_response(error)
            except RequestValidationError as exc:
                return anthropic_error_response(invalid_request_of(exc, request))
            except HTTPException as exc:  # FastAPI's own refusals, e.g. a body it cannot parse
                return anthropic_error_response(http_error(exc))
            except Exception as exc:
                # Type only: a message or traceback could carry a secret from a provider's SDK.
                log.error("internal error on %s: %s", request.url.path, type(exc).__name__)
                return anthropic_error_response(InternalError("internal error"))

        return answer
