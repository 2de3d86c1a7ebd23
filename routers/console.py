"""`GET /console`: the web console, served by the gateway itself, and the JSON it polls.

The page and its script and style sheet are files shipped in this package (`console_static/`),
hand-written, with no build step and no request to any other host. The page itself holds
nothing about the gateway; everything it shows comes from `/console/api/…`, behind the admin
key exactly as `/admin/…` is (`routers.deps.require_admin`). The browser keeps the key the
operator types in its session storage and sends it as a bearer token.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.chat import ChatRequest, Message
from app.errors import NotFound, RouterError
from app.routing import Node
from app.telemetry import Telemetry
from routers.common import complete, decisions_of
from routers.deps import GatewayDep, caller_key, require_admin, resolve_node

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/console/api", dependencies=[Depends(require_admin)])

ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
# The page runs only its own script and style, and talks only to this gateway.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _asset(name: str) -> bytes:
    return resources.files("routers").joinpath("console_static", name).read_bytes()


def _telemetry(request: Request) -> Telemetry:
    return request.app.state.telemetry


@router.get("/console")
async def page() -> Response:
    return Response(
        _asset("index.html"),
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "cache-control": "no-cache"},
    )


@router.get("/console/assets/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no console asset '{name}'")
    return Response(
        _asset(name),
        media_type=media_type,
        headers={**SECURITY_HEADERS, "cache-control": "no-cache"},
    )


@router.get("/console/session")
async def session(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """Whether the console needs the admin key, and whether the one sent (if any) is it.
    Always 200, so that a browser asking before its operator has logged in logs no error."""
    callers = gateway.callers
    given = caller_key(request)
    disabled = not callers.admin_configured and callers.required
    if callers.admin_configured:
        authorized = given is not None and callers.is_admin(given)
    else:
        authorized = not disabled
    return {
        "admin_key_required": callers.admin_configured,
        "authorized": authorized,
        "disabled": disabled,
    }


# ---- the data the console polls ---------------------------------------------------------------


async def _refresh_breakers(roots: list[Node]) -> None:
    """Read each breaker's state from the state store (shared by replicas when it is Redis):
    a breaker's `state` is otherwise the last one this process saw, e.g. `open` long after the
    cooldown has passed."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for breaker in (getattr(node, "breakers", None) or {}).values():
            breaker.state = await breaker.store.breaker_state(
                breaker.key, breaker.config.cooldown_s
            )
        stack.extend(node.children())


@api.get("/overview")
async def overview(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """Every route's tree with its recent traffic per node, and the per-model report."""
    telemetry = _telemetry(request)
    await _refresh_breakers(list(gateway.routes.values()))
    traffic = telemetry.recent.node_traffic()
    routes = [
        {
            "name": name,
            "tree": node.describe(),
            "traffic": traffic.get(name, {"requests": 0, "nodes": {}}),
        }
        for name, node in gateway.routes.items()
    ]
    return {
        "pid": os.getpid(),
        "now": time.time(),
        "config": gateway.config.source,
        "capture_content": gateway.config.tracing.capture_content,
        "routes": routes,
        "stats": telemetry.stats.report(),
    }


@api.get("/traffic")
async def traffic(request: Request) -> dict[str, Any]:
    """The charts' series: requests, errors, latency, tokens and cost over the last minutes."""
    return _telemetry(request).timeline.report()


@api.get("/requests")
async def recent_requests(
    request: Request,
    route: str | None = None,
    provider: str | None = None,
    outcome: str | None = None,
    limit: int = 300,
) -> dict[str, Any]:
    recent = _telemetry(request).recent
    found = recent.latest(
        limit=max(1, min(limit, 1000)), route=route, provider=provider, outcome=outcome
    )
    return {"requests": [r.as_dict() for r in found], "facets": recent.facets()}


class TryIt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str
    prompt: str = Field(min_length=1, max_length=20_000)
    dry_run: bool = True
    max_tokens: int | None = Field(default=None, ge=1, le=4096)


@api.post("/try")
async def try_it(body: TryIt, request: Request, gateway: GatewayDep) -> JSONResponse:
    """Send one prompt through a route, as `POST /v1/chat` would (dry run or not), and show
    what was decided: also when it fails, with the failure's status."""
    started = time.perf_counter()
    node = resolve_node(gateway, body.route)
    chat = ChatRequest(
        route=body.route,
        messages=[Message(role="user", content=body.prompt)],
        dry_run=body.dry_run,
        max_tokens=body.max_tokens,
    )
    call = gateway.new_call(chat, request.headers)
    status, error, text = 200, None, None
    try:
        completion = await complete(node, call)
        text = completion.message.content
    except RouterError as failure:
        status, error = failure.status, failure.body()["error"]
    answer = call.answer
    return JSONResponse(
        {
            "route": body.route,
            "dry_run": body.dry_run,
            "target": answer.target.name if answer else None,
            "provider": answer.target.provider.name if answer else None,
            "model": answer.model if answer else None,
            "estimated_cost_usd": round(call.estimated_cost_usd(answer.target), 10)
            if answer
            else None,
            "cost_usd": round(answer.cost_usd, 10) if answer else 0.0,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "decisions": decisions_of(call),
            "attempts": [a.as_dict() for a in call.attempts],
            "trace_id": call.trace_id,
            "message": None if body.dry_run else text,
            "error": error,
        },
        status_code=status,
    )


router.include_router(api)
