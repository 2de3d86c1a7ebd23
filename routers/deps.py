"""Dependencies shared by the endpoints: the running gateway and caller authentication."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.config import suggest
from app.errors import AuthenticationFailed, NotFound
from app.gateway import Gateway
from app.routing import Node


def get_gateway(request: Request) -> Gateway:
    # Read once per request: a reload swaps app.state.gateway, in-flight calls keep theirs.
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def caller_key(request: Request) -> str | None:
    """The caller's key from `Authorization: Bearer …` or `x-api-key`."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return request.headers.get("x-api-key") or None


def authenticate(request: Request) -> None:
    """Refuse callers without a configured key; no-op when `server.api_keys` is empty."""
    keys = get_gateway(request).config.server.caller_keys()
    if not keys:
        return
    given = caller_key(request)
    if given is None:
        raise AuthenticationFailed("an API key is required", code="missing_api_key")
    supplied = given.encode()
    # Compare with every key, in constant time, so timing says nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied, key.encode())
    if not matched:
        raise AuthenticationFailed("the API key is not valid", code="invalid_api_key")


def resolve_node(gateway: Gateway, name: str) -> Node:
    node = gateway.node_for(name)
    if node is None:
        hint = suggest(name, [n for n, _ in gateway.names()])
        raise NotFound(f"unknown route or model '{name}'{hint}", code="model_not_found")
    return node
