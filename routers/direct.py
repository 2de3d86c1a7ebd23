"""`DirectRoute`: the chat endpoints' ordinary request without FastAPI's generic machinery.

FastAPI handles every request the same general way: the body read as JSON with the stdlib,
the content type parsed with `email.message`, every dependency solved through
`solve_dependencies` (cache keys, scope checks, query/header/cookie parameters gathered even
when the endpoint takes none), then the body validated through a field adapter. On a gateway
that answers in a few milliseconds that is a measurable share of each request's CPU.

A `DirectRoute` keeps the route exactly as FastAPI declares it (path, OpenAPI document, the
dependencies its router adds) and takes a shorter way only for the request every caller sends:
a JSON body under `application/json`, that parses and validates. It then calls the route's
dependencies itself, in FastAPI's order, and the endpoint. Anything else — no or another
content type, an empty body, JSON the fast parser refuses, a body that fails validation,
dependency overrides — goes down FastAPI's own handler, which answers it exactly as before
(the body already read is cached on the request, so it is not read twice).

Only routes that fit are taken this way; a route with parameters of other kinds, dependencies
that are not plain `async def f(request)`, a response model (other than `Any`) or a fixed status
code gets FastAPI's handler unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, serialize_response
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

try:  # the route as an including router sees it (its own dependencies added), where it has one
    from fastapi.routing import _effective_route_context_var as _effective
except ImportError:  # pragma: no cover - a FastAPI without inclusion contexts
    _effective = None

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _request_only(dependant: Any) -> bool:
    """A dependency FastAPI would call with the request alone, and nothing to clean up."""
    return (
        inspect.iscoroutinefunction(dependant.call)
        and dependant.request_param_name is not None
        and not dependant.dependencies
        and not dependant.path_params
        and not dependant.query_params
        and not dependant.header_params
        and not dependant.cookie_params
        and not dependant.body_params
        and dependant.websocket_param_name is None
        and dependant.http_connection_param_name is None
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
        and getattr(dependant, "concurrency", None) is None
    )


def _any_response(field: Any) -> bool:
    """No response model, or `Any` (an endpoint annotated `-> Any`): nothing to validate."""
    return field is None or field.field_info.annotation is Any


def _json_content_type(headers: list[tuple[bytes, bytes]]) -> bool:
    """The first Content-Type is plain `application/json` (what FastAPI would parse as JSON)."""
    for name, value in headers:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json"
    return False


Plan = tuple[type[BaseModel], str, str | None, list[tuple[str | None, Any]]]


class _Direct:
    """The ordinary request of one route (as one inclusion of it sees it), answered directly."""

    __slots__ = ("dependencies", "endpoint", "field", "model", "name", "overrides", "request")

    def __init__(self, route: Any, plan: Plan) -> None:
        self.model, self.name, self.request, self.dependencies = plan
        self.endpoint = route.dependant.call
        self.field = route.response_field
        self.overrides = route.dependency_overrides_provider

    async def answer(self, request: Request, raw: bytes) -> Response | None:
        """The response to `request` with the body `raw`, or None where the request is not the
        ordinary one (FastAPI's own handler answers it then)."""
        overrides = self.overrides
        if overrides is not None and getattr(overrides, "dependency_overrides", None):
            return None
        if not raw or not _json_content_type(request.scope["headers"]):
            return None
        try:
            body = self.model.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError):
            # Said as FastAPI says it (or, for JSON only the stdlib accepts, answered).
            return None
        values: dict[str, Any] = {self.name: body}
        for name, call in self.dependencies:
            solved = await call(request)
            if name is not None:
                values[name] = solved
        if self.request is not None:
            values[self.request] = request
        result = await self.endpoint(**values)
        if isinstance(result, Response):
            return result
        content = await serialize_response(field=self.field, response_content=result)
        return JSONResponse(content)


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        generic = super().get_route_handler()
        context = _effective.get() if _effective is not None else None
        route: Any = self
        if context is not None and getattr(context, "original_route", None) is self:
            route = context
        plan = _plan(route)
        if plan is None:
            return generic
        direct = _Direct(route, plan)

        async def handler(request: Request) -> Response:
            shortcuts = request.scope.get(_SHORTCUTS)
            if shortcuts is not None:  # the router chose this route: the next time, no need
                shortcuts.learn(request.scope, direct)
            # Read here, the body stays cached on `request` for FastAPI's handler.
            response = await direct.answer(request, await request.body())
            if response is None:
                return await generic(request)
            return response

        return handler


# ---- requests that need no routing --------------------------------------------------------------

_SHORTCUTS = "llm_router.shortcuts"


class Shortcuts:
    """The router, or for a request that a `DirectRoute` has answered before (same method and
    path), that route's direct handler without routing (ASGI app).

    The router matches every request against the routes in order, through FastAPI's included
    routers and their inclusion contexts, then FastAPI wraps the handler in two exit stacks and
    its own exception layer: a tenth of a chat request's CPU. Routing depends on the method and
    the path alone here (no route is matched by host), and the routes do not change once the
    app serves, so where the router once took a request to a `DirectRoute`'s handler, the same
    method and path go straight to that handler's direct answer. Its exceptions go up to the
    app's exception middleware, with the same handlers the route's own layer has. A request that
    is not the ordinary one (its body in several messages included) goes to the router, what was
    read of it given again.
    """

    def __init__(self, router: ASGIApp) -> None:
        self.router = router  # the router, or the layers between here and it
        self._known: dict[tuple[str, str, str], _Direct] = {}

    def learn(self, scope: Scope, direct: _Direct) -> None:
        self._known[(scope["method"], scope.get("root_path", ""), scope["path"])] = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            direct = self._known.get((scope["method"], scope.get("root_path", ""), scope["path"]))
            if direct is not None:
                # The body in one message, as the gateway's middleware or the server gives it
                # (Starlette's `Request.body` would read it through an async generator).
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body", False):
                    raw = message.get("body", b"")
                    request = Request(scope, _again(message, receive), send)
                    response = await direct.answer(request, raw)
                    if response is not None:
                        await response(scope, receive, send)
                        return
                receive = _again(message, receive)
            else:
                scope[_SHORTCUTS] = self
        await self.router(scope, receive, send)


def _again(message: Message, receive: Receive) -> Receive:
    """`receive`, but the message already received comes first (once)."""
    pending = [message]

    async def again() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return again


def install_shortcuts(stack: ASGIApp, router: ASGIApp) -> ASGIApp:
    """`stack` (an app's middleware, outermost first) with `Shortcuts` in place of `router` at its
    bottom, unchanged where no layer is found to hold `router` as its `app`. Above FastAPI's
    exit stack for files, where that holds the router: a direct answer reads no form and opens
    no file, so it needs none (routed requests still get theirs)."""
    chain: list[Any] = []
    layer: Any = stack
    while layer is not None and layer is not router:
        chain.append(layer)
        layer = getattr(layer, "app", None)
    if layer is None or not chain:
        return stack
    routed = chain.pop()  # the layer that calls the router
    if isinstance(routed, AsyncExitStackMiddleware) and chain:
        chain[-1].app = Shortcuts(routed)
    else:
        routed.app = Shortcuts(router)
    return stack


class DirectApp(FastAPI):
    """FastAPI, with the requests a `DirectRoute` has answered taken to it without routing."""

    def build_middleware_stack(self) -> ASGIApp:
        return install_shortcuts(super().build_middleware_stack(), self.router)


def _plan(route: Any) -> Plan | None:
    """What the direct handler needs, or None where the route does not fit it."""
    dependant = route.dependant
    if (
        not inspect.iscoroutinefunction(dependant.call)
        or not _any_response(route.response_field)
        or route.status_code is not None
        or route._embed_body_fields
        or len(dependant.body_params) != 1
        or dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.websocket_param_name is not None
        or dependant.http_connection_param_name is not None
        or dependant.response_param_name is not None
        or dependant.background_tasks_param_name is not None
        or dependant.security_scopes_param_name is not None
    ):
        return None
    field = dependant.body_params[0]
    model = field.field_info.annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    if not all(_request_only(sub) for sub in dependant.dependencies):
        return None
    # Each dependency once, as FastAPI's per-request cache would have it.
    dependencies: list[tuple[str | None, Any]] = []
    seen: set[Any] = set()
    for sub in dependant.dependencies:
        if sub.call in seen:
            return None
        seen.add(sub.call)
        dependencies.append((sub.name, sub.call))
    return model, field.name, dependant.request_param_name, dependencies
