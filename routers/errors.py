"""The one place where errors become HTTP responses (SPEC "Errors").

Every error, on every endpoint, is `{"error": {"type", "message", "code", "details"}}`: the
OpenAI error shape, so OpenAI SDKs raise their usual exceptions. No stack trace, key or config
secret is ever put in a response or a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    BudgetExceeded,
    ErrorKind,
    InternalError,
    InvalidRequest,
    NotFound,
    ProviderError,
    RateLimited,
    RouterError,
    UpstreamError,
    UpstreamTimeout,
)
from app.routing import Call

log = logging.getLogger("llm_router")


def upstream_failure(error: ProviderError, call: Call) -> RouterError:
    """What the caller is told when the routing tree gave up: SPEC's status for the cause."""
    attempts = [a.as_dict() for a in call.attempts]
    details: dict[str, Any] = {"attempts": attempts}
    kind = error.kind
    if kind is ErrorKind.BUDGET_EXCEEDED and not call.attempts:
        # Nothing was tried because nothing fitted; after real failures the 502 below says more.
        details["max_cost_usd"] = call.request.max_cost_usd
        details["skipped"] = [d.detail for d in call.decisions if d.outcome == "over_budget"]
        return BudgetExceeded(
            "no target fits the request's max_cost_usd", code=kind.value, details=details
        )
    if kind.client_fault or kind is ErrorKind.CONTEXT_LENGTH:
        return InvalidRequest(error.message, code=kind.value, details=details)
    if kind is ErrorKind.RATE_LIMITED and all(a.error == "rate_limited" for a in call.attempts):
        return RateLimited(
            "every target is rate limited", details=details, retry_after=error.retry_after or 1.0
        )
    if kind is ErrorKind.TIMEOUT:
        return UpstreamTimeout(error.message, code=kind.value, details=details)
    return UpstreamError(error.message, code=kind.value, details=details)


def error_response(error: RouterError) -> JSONResponse:
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Location and reason only: echoing the input could reflect a caller's secret back.
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        problems.append({"loc": ".".join(loc), "msg": error.get("msg", "invalid")})
    return problems


def _not_json(request: Request) -> str | None:
    """The Content-Type a body was declared as, where it is one FastAPI does not read as JSON
    (`curl -d` sends a form type); None for JSON types and for a body sent with none."""
    declared = request.headers.get("content-type")
    if not declared:
        return None
    kind = declared.split(";", 1)[0].strip().lower()
    return None if kind == "application/json" or kind.endswith("+json") else kind


def invalid_request_of(exc: RequestValidationError, request: Request) -> InvalidRequest:
    """A body that failed validation, as the caller is told: the first problem, then all."""
    declared = _not_json(request)
    if declared is not None:
        # The body was never read as JSON: what validation says of it would only mislead.
        return InvalidRequest(
            f"the body must be JSON sent as Content-Type: application/json, not {declared}",
            code="unsupported_content_type",
        )
    problems = _validation_details(exc)
    if any(p["msg"].startswith("JSON decode error") for p in problems):
        return InvalidRequest("the body is not valid JSON", code="invalid_json")
    first = problems[0] if problems else {"loc": "", "msg": "invalid request"}
    message = f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
    return InvalidRequest(message, details={"problems": problems})


def http_error(exc: StarletteHTTPException) -> RouterError:
    """A refusal raised by FastAPI or Starlette themselves (a body that cannot be parsed, a
    method not allowed), in the gateway's taxonomy."""
    error = RouterError(str(exc.detail), code=f"http_{exc.status_code}")
    error.status = exc.status_code
    error.type = "invalid_request" if exc.status_code < 500 else "internal"
    return error


def install(app: FastAPI) -> None:
    @app.exception_handler(RouterError)
    async def _router_error(request: Request, exc: RouterError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(invalid_request_of(exc, request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound(f"no endpoint {request.method} {request.url.path}"))
        return error_response(http_error(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Type only: a message or traceback could carry a secret from a provider's SDK.
        log.error("internal error on %s: %s", request.url.path, type(exc).__name__)
        return error_response(InternalError("internal error"))
