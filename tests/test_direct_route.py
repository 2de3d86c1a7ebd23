"""`DirectRoute` answers every request exactly as FastAPI's own handler does, only cheaper."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import fastapi.routing
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from routers.direct import DirectApp, DirectRoute, Shortcuts, _plan, install_shortcuts


class Item(BaseModel):
    name: str
    count: int = Field(default=1, ge=1)
    ratio: float | None = None
    tags: list[str] = []


class Refused(Exception):
    pass


async def who(request: Request) -> str:
    return request.headers.get("x-who", "nobody")


async def guard(request: Request) -> None:
    if request.headers.get("x-refuse"):
        raise Refused()


def build(route_class: type[APIRoute], app_class: type[FastAPI] = FastAPI) -> FastAPI:
    router = APIRouter(dependencies=[Depends(guard)], route_class=route_class)

    @router.post("/items")
    async def create(body: Item, request: Request, caller: Annotated[str, Depends(who)]) -> Any:
        return JSONResponse({"item": body.model_dump(), "caller": caller, "path": request.url.path})

    @router.post("/plain")
    async def plain(body: Item) -> Any:
        return {"echo": body.model_dump()}  # not a Response: serialized as FastAPI would

    app = app_class(strict_content_type=False)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"refused": True}, status_code=403)

    app.include_router(router)
    return app


JSON = {"content-type": "application/json"}
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("/items", b'{"name": "a"}', JSON),
    ("/items", b'{"name": "a", "count": 3, "ratio": 0.5, "tags": ["x", "\\u00e9"]}', JSON),
    ("/items", b'{"name": "a"}', {"content-type": "application/json; charset=utf-8"}),
    ("/items", b'{"name": "a"}', {**JSON, "x-who": "me"}),
    ("/items", b'{"name": "a"}', {**JSON, "x-refuse": "1"}),  # a dependency raising
    ("/items", b'{"name": 5}', {**JSON, "x-refuse": "1"}),  # the dependency runs first
    ("/items", b'{"name": "a", "count": 0}', JSON),  # fails validation
    ("/items", b'{"count": "many"}', JSON),
    ("/items", b"[]", JSON),
    ("/items", b"{not json", JSON),
    ("/items", b"", JSON),
    ("/items", b'{"name": "a", "ratio": NaN}', JSON),  # JSON only the stdlib parser takes
    ("/items", b'{"name": "a", "count": 100000000000000000000000}', JSON),  # past 64 bits
    ("/items", b'{"name": "\\ud800"}', JSON),  # a lone surrogate
    ("/items", b'{"name": "a", "name": "b"}', JSON),  # a repeated key: the last wins
    ("/items", b'\xef\xbb\xbf{"name": "a"}', JSON),  # a byte-order mark
    ("/items", b'{"name": "a"}', {}),  # no content type
    ("/items", b'{"name": "a"}', {"content-type": "text/plain"}),
    ("/items", b"name=a", {"content-type": "application/x-www-form-urlencoded"}),
    ("/items", b'{"name": "a"}', {"content-type": "application/vnd.api+json"}),
    ("/plain", b'{"name": "a", "count": 2}', JSON),
    ("/plain", b'{"name": 1}', JSON),
]


@pytest.mark.parametrize(("path", "content", "headers"), CASES)
def test_answers_as_fastapi_does(path: str, content: bytes, headers: dict[str, str]) -> None:
    # A NaN the endpoint cannot answer with is a 500 either way.
    generic = TestClient(build(APIRoute), raise_server_exceptions=False)
    direct = TestClient(build(DirectRoute), raise_server_exceptions=False)
    expected = generic.post(path, content=content, headers=headers)
    got = direct.post(path, content=content, headers=headers)
    assert (got.status_code, got.headers.get("content-type"), got.content) == (
        expected.status_code,
        expected.headers.get("content-type"),
        expected.content,
    )


@pytest.mark.parametrize(("path", "content", "headers"), CASES)
def test_answers_as_fastapi_does_without_routing(
    path: str, content: bytes, headers: dict[str, str]
) -> None:
    # The first ordinary request is routed (and teaches the shortcut its route), the next ones
    # are not: each answer is FastAPI's, whatever the body.
    generic = TestClient(build(APIRoute), raise_server_exceptions=False)
    direct = TestClient(build(DirectRoute, DirectApp), raise_server_exceptions=False)
    assert direct.post(path, json={"name": "first"}).status_code == 200
    expected = generic.post(path, content=content, headers=headers)
    for _ in range(2):
        got = direct.post(path, content=content, headers=headers)
        assert (got.status_code, got.headers.get("content-type"), got.content) == (
            expected.status_code,
            expected.headers.get("content-type"),
            expected.content,
        )


def _shortcuts(app: FastAPI) -> Shortcuts:
    layer: Any = app.middleware_stack
    while not isinstance(layer, Shortcuts):
        layer = layer.app
    return layer


def _in_parts(app: FastAPI, path: str, parts: list[bytes]) -> tuple[int, Any]:
    """POST `parts` as one body in as many ASGI messages; the status and the JSON answer."""
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "server": ("testserver", 80),
        "client": ("testclient", 1),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_known_route_is_answered_without_routing() -> None:
    app = build(DirectRoute, DirectApp)
    client = TestClient(app)
    assert client.post("/items", json={"name": "a"}).status_code == 200
    shortcuts = _shortcuts(app)
    routed: list[str] = []
    router = shortcuts.router

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await router(scope, receive, send)

    shortcuts.router = counting
    answer = client.post("/items", json={"name": "b"}, headers={"x-who": "me"})
    assert answer.json()["caller"] == "me" and routed == []
    # What the direct answer does not take is routed, its body given again: refused as
    # FastAPI refuses it; a dependency's exception answered by the app's handler.
    assert client.post("/items", json={"name": 1}).status_code == 422
    assert client.post("/items", json={"name": "c"}, headers={"x-refuse": "1"}).status_code == 403
    assert client.post("/plain", json={"name": "d"}).status_code == 200
    assert client.get("/items").status_code == 405
    assert routed == ["/items", "/plain", "/items"]
    # A body in several messages is routed, what was read of it given again.
    status, answer = _in_parts(app, "/items", [b'{"name":', b' "f"}'])
    assert (status, answer["item"]["name"]) == (200, "f")
    # (Its first part alone would do, the whole does not: refused as FastAPI refuses it.)
    assert _in_parts(app, "/items", [b'{"name": "f"}', b"[]"])[0] == 422
    assert routed == ["/items", "/plain", "/items", "/items", "/items"]
    routed.clear()
    # Learned: /plain now goes straight to its route too.
    assert client.post("/plain", json={"name": "e"}).json() == {
        "echo": {"name": "e", "count": 1, "ratio": None, "tags": []}
    }
    assert routed == []


def test_shortcuts_only_where_the_router_is_found() -> None:
    class Outer:
        def __init__(self, app: Any) -> None:
            self.app = app

    router, other = object(), object()
    stack = Outer(Outer(router))
    assert install_shortcuts(stack, router) is stack
    assert isinstance(stack.app.app, Shortcuts) and stack.app.app.router is router
    untouched = Outer(Outer(other))
    install_shortcuts(untouched, router)
    assert untouched.app.app is other
    # Above FastAPI's exit stack for files, which routed requests still go through.
    files = AsyncExitStackMiddleware(router)  # type: ignore[arg-type]
    stack = Outer(files)
    install_shortcuts(stack, router)
    assert isinstance(stack.app, Shortcuts) and stack.app.router is files and files.app is router


def test_a_gateway_app_takes_shortcuts_above_the_exit_stack() -> None:
    from app.config import parse_config
    from app.factory import create_app

    config = "providers: {sim: {type: simulated}}\nmodels: {fast: {provider: sim, model: m}}\n"
    app = create_app(parse_config(config + "routes: {default: fast}\n", source="<test>"))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        shortcuts = _shortcuts(app)
        assert isinstance(shortcuts.router, AsyncExitStackMiddleware)
        assert shortcuts.router.app is app.router


def test_an_ordinary_request_skips_fastapi_dependency_solving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = TestClient(build(DirectRoute))
    solved: list[object] = []
    original = fastapi.routing.solve_dependencies

    async def counting(**kwargs: Any) -> Any:
        solved.append(kwargs["dependant"])
        return await original(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    assert client.post("/items", json={"name": "a"}, headers={"x-who": "me"}).json() == {
        "item": {"name": "a", "count": 1, "ratio": None, "tags": []},
        "caller": "me",
        "path": "/items",
    }
    assert solved == []
    # A body FastAPI must refuse goes its way, and is refused as it would refuse it.
    assert client.post("/items", json={"name": 1}).status_code == 422
    assert len(solved) == 1


@pytest.mark.parametrize("app_class", [FastAPI, DirectApp])
def test_dependency_overrides_are_honoured(app_class: type[FastAPI]) -> None:
    app = build(DirectRoute, app_class)
    client = TestClient(app)
    assert client.post("/items", json={"name": "a"}).json()["caller"] == "nobody"

    async def someone(request: Request) -> str:
        return "overridden"

    app.dependency_overrides[who] = someone  # after the route is known, for DirectApp
    answer = client.post("/items", json={"name": "a"})
    assert answer.json()["caller"] == "overridden"


def test_only_routes_that_fit_are_taken_directly() -> None:
    router = APIRouter(route_class=DirectRoute)

    @router.post("/query")
    async def with_query(body: Item, q: str) -> Any:
        return {}

    @router.post("/status", status_code=201)
    async def with_status(body: Item) -> Any:
        return {}

    @router.post("/model")
    async def with_model(body: Item) -> Item:
        return body

    async def sync_dep(request: Request) -> None:
        yield

    @router.post("/gen")
    async def with_generator(body: Item, _: Annotated[None, Depends(sync_dep)]) -> Any:
        return {}

    @router.get("/none")
    async def without_body() -> Any:
        return {}

    @router.post("/fits")
    async def fits(body: Item, request: Request) -> Any:
        return {}

    taken = {route.path: _plan(route) is not None for route in router.routes}
    assert taken == {
        "/query": False,
        "/status": False,
        "/model": False,
        "/gen": False,
        "/none": False,
        "/fits": True,
    }


def test_the_gateway_chat_endpoints_are_taken_directly() -> None:
    from routers import chat, openai_compat

    for router, path in ((chat.router, "/v1/chat"), (openai_compat.router, "/v1/chat/completions")):
        (route,) = [r for r in router.routes if getattr(r, "path", None) == path]
        assert isinstance(route, DirectRoute) and _plan(route) is not None
