"""One error taxonomy for the whole gateway.

Adapters raise `ProviderError` with a `kind`; policies decide from the kind whether another
attempt is worth it; the HTTP layer turns any `RouterError` into SPEC's JSON envelope in one
place (`routers/errors.py`). Messages here are written for callers: they never carry secrets.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    """What went wrong with one upstream call."""

    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    AUTHENTICATION = "authentication"
    CONTEXT_LENGTH = "context_length_exceeded"
    CONTENT_FILTERED = "content_filtered"
    NOT_FOUND = "not_found"  # the provider does not know the model
    BUDGET_EXCEEDED = "budget_exceeded"  # the request's max_cost_usd rules the target out

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def client_fault(self) -> bool:
        """The caller's request is at fault: another target will not help (context length aside)."""
        return self in (ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_FILTERED)


_RETRYABLE = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR})


class RouterError(Exception):
    """An error with an HTTP face: SPEC's `{"error": {type, message, code, details}}`."""

    type: str = "internal"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.type
        self.details = details or {}
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message, "code": self.code}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(RouterError):
    type, status = "invalid_request", 400


class AuthenticationFailed(RouterError):
    type, status = "authentication", 401


class Forbidden(RouterError):
    type, status = "authentication", 403


class BudgetExceeded(RouterError):
    type, status = "budget_exceeded", 402


class NotFound(RouterError):
    type, status = "not_found", 404


class PayloadTooLarge(RouterError):
    type, status = "payload_too_large", 413


class RateLimited(RouterError):
    type, status = "rate_limited", 429


class InternalError(RouterError):
    type, status = "internal", 500


class UpstreamError(RouterError):
    type, status = "upstream_error", 502


class UpstreamTimeout(RouterError):
    type, status = "upstream_timeout", 504


class ServiceUnavailable(RouterError):
    type, status = "unavailable", 503


class ProviderError(Exception):
    """One failed upstream call, classified. Raised by adapters, consumed by policies."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.provider = provider
        self.model = model

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value!r}, {self.message!r}, status={self.status})"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header value; None when absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from datetime import UTC, datetime
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds)
