"""Dependencies shared by the endpoints: the running gateway and caller authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app import quota
from app.config import suggest
from app.errors import AuthenticationFailed, Forbidden, NotFound
from app.gateway import Gateway
from app.lifecycle import pinned_gateway
from app.routing import Node


def get_gateway(request: Request) -> Gateway:
    # Read once per request: a reload swaps app.state.gateway, in-flight calls keep theirs
    # (the one the lifecycle middleware pinned when the request arrived, which it counts).
    return pinned_gateway(request.scope) or request.app.state.gateway


async def _gateway(request: Request) -> Gateway:
    # A dependency: async, because FastAPI runs a plain `def` one in a thread pool, which
    # costs a thread hand-off on every request.
    return get_gateway(request)


GatewayDep = Annotated[Gateway, Depends(_gateway)]


def caller_key(request: Request) -> str | None:
    """The caller's key from `Authorization: Bearer …` or `x-api-key`."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request) -> None:
    """Refuse callers without a configured key (none configured: no caller auth), and bind
    the caller's rate limits and budget to the request (`app/quota.py`)."""
    gateway = get_gateway(request)
    callers = gateway.callers
    if not callers.required:
        return
    given = caller_key(request)
    if given is None:
        raise AuthenticationFailed("an API key is required", code="missing_api_key")
    caller = callers.identify(given)  # constant time, whichever key matched
    if caller is None:
        raise AuthenticationFailed("the API key is not valid", code="invalid_api_key")
    quota.bind(caller, gateway.state)


async def require_admin(request: Request) -> None:
    """Admin endpoints take the admin key (`server.admin_key`) and refuse callers' keys. With
    no admin key configured they are open only while caller auth is off too (local use)."""
    callers = get_gateway(request).callers
    given = caller_key(request)
    if callers.admin_configured:
        if given is None:
            raise AuthenticationFailed("the admin key is required", code="missing_api_key")
        if not callers.is_admin(given):
            raise AuthenticationFailed("the admin key is not valid", code="invalid_admin_key")
        return
    if callers.required:
        raise Forbidden(
            "admin endpoints are disabled: callers need keys and no server.admin_key is set",
            code="admin_key_not_configured",
        )


def resolve_node(gateway: Gateway, name: str) -> Node:
    node = gateway.node_for(name)
    if node is None:
        hint = suggest(name, [n for n, _ in gateway.names()])
        raise NotFound(f"unknown route or model '{name}'{hint}", code="model_not_found")
    return node
