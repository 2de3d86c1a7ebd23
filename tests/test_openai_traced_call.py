"""The adapter's traced call (`_TracedCall`): OpenInference's wrapper of `AsyncOpenAI.request`
called around the adapter's own send must record the span the wrapper records around the SDK's
`request` (name, status, every attribute in order, events), answer the same body and raise the
same errors; and any other shape of `request` must leave the call to the SDK's `request`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers import openai as adapter
from providers.openai import OpenAIConfig, OpenAIProvider
from tests.fakes.server import serve_app
from tests.tracing_helpers import openai_spans

COMPLETION = b'{"id":"c1","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok \\u00e9","tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"system_fingerprint":"fp","extra_field":{"a":[1,2.5,null]}}'  # noqa: E501
# A lone surrogate: the standard library's JSON takes it, pydantic-core's refuses it.
SURROGATE = COMPLETION.replace(b"ok \\u00e9", b"ok \\ud800")
# Not a chat completion: validation fails, the SDK's lenient `construct` builds it anyway.
LOOSE = b'{"id":"c1","object":"chat.completion","created":"soon","model":"m","choices":[]}'

BODIES = {
    "ok": (200, COMPLETION, "application/json"),
    "surrogate": (200, SURROGATE, "application/json"),
    "loose": (200, LOOSE, "application/json"),
    "text": (200, COMPLETION, "text/plain"),
    "s400": (
        400,
        b'{"error":{"message":"bad","type":"invalid_request_error"}}',
        "application/json",
    ),
    "s429": (429, b'{"error":{"message":"slow down"}}', "application/json"),
    "s500": (500, b"", "text/plain"),
}


def _answer(status: int, body: bytes, kind: str) -> Any:
    async def answer(request: Request) -> Response:
        return Response(body, status_code=status, media_type=kind, headers={"x-request-id": "r1"})

    return answer


async def _slow(request: Request) -> Response:
    await asyncio.sleep(1)
    return Response(COMPLETION, media_type="application/json")


CHUNK = '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[%s]}'
EVENTS = b"".join(
    f"data: {data}\n\n".encode()
    for data in (
        CHUNK % '{"index":0,"delta":{"role":"assistant","content":"o"},"finish_reason":null}',
        CHUNK % '{"index":0,"delta":{"content":"k"},"finish_reason":"stop"}',
        (CHUNK % "")[:-1] + ',"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}',
        "[DONE]",
    )
)
BODIES["sse"] = (200, EVENTS, "text/event-stream")


APP = Starlette(
    routes=[
        *(
            Route(f"/{name}/chat/completions", _answer(*answer), methods=["POST"])
            for name, answer in BODIES.items()
        ),
        Route("/slow/chat/completions", _slow, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with ExitStack() as stack:
        yield stack.enter_context(serve_app(APP))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """OpenInference's OpenAI instrumentor, recording into memory, for the test only."""
    with openai_spans() as exporter:
        yield exporter


def _provider(url: str) -> OpenAIProvider:
    return OpenAIProvider("p", OpenAIConfig(type="openai", api_key="k", base_url=url))


def _span_shape(span: Any) -> dict[str, Any]:
    events = [
        (e.name, {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"})
        for e in span.events
    ]
    return {
        "name": span.name,
        "status": (span.status.status_code, span.status.description),
        "attributes": list(span.attributes.items()),
        "events": events,
    }


async def _call(p: OpenAIProvider, within_s: float) -> Any:
    params = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "timeout": within_s}
    try:
        return ("ok", await p._post_chat(params))
    except openai.APIStatusError as exc:
        return (type(exc), exc.status_code, exc.body, str(exc))
    except openai.APIError as exc:
        return (type(exc), str(exc))
    except orjson.JSONDecodeError:  # the adapter's own read (orjson refuses a lone surrogate)
        return ("unreadable",)


async def _stream(p: OpenAIProvider, within_s: float) -> Any:
    params = {"model": "m", "messages": [], "stream": True, "timeout": within_s}
    params["stream_options"] = {"include_usage": True}
    try:
        chunks = await p._post_stream(params)
        async with chunks:
            return ("ok", type(chunks).__name__, [chunk.data async for chunk in chunks])
    except openai.APIStatusError as exc:
        return (type(exc), exc.status_code, exc.body, str(exc), exc.response.content)
    except openai.APIError as exc:
        return (type(exc), str(exc))


async def _both(
    p: OpenAIProvider, spans: InMemorySpanExporter, within_s: float, call: Any = _call
) -> Any:
    """(answer, span) through the SDK's `request`, then through the traced call."""
    taken: list[bool] = []
    real_wrapper = adapter._TracedCall.wrapper

    def sdk_only(self: Any) -> Any:
        return None

    def spy(self: Any) -> Any:
        found = real_wrapper(self)
        taken.append(found is not None)
        return found

    outcomes = []
    for wrapper in (sdk_only, spy):
        adapter._TracedCall.wrapper = wrapper  # type: ignore[method-assign]
        try:
            spans.clear()
            answer = await call(p, within_s)
        finally:
            adapter._TracedCall.wrapper = real_wrapper  # type: ignore[method-assign]
        (span,) = spans.get_finished_spans()
        outcomes.append((answer, _span_shape(span)))
    assert taken == [True], "the traced call was not taken"
    return outcomes


@pytest.mark.parametrize("path", [*BODIES, "slow"])
async def test_the_traced_call_records_and_answers_as_request_does(
    base: str, spans: InMemorySpanExporter, path: str
) -> None:
    p = _provider(f"{base}/{path}")
    try:
        await _call(p, 5)  # the first call finds the platform out
        within_s = 0.2 if path == "slow" else 5
        through_sdk, traced = await _both(p, spans, within_s)
        assert traced == through_sdk
        if path == "ok":
            answer, span = traced
            assert answer[0] == "ok" and answer[1]["choices"][0]["message"]["content"] == "ok é"
            assert dict(span["attributes"])["llm.token_count.total"] == 2
    finally:
        await p.aclose()


@pytest.mark.parametrize("path", ["sse", "s400", "s429", "s500", "slow"])
async def test_a_traced_stream_records_and_answers_as_request_does(
    base: str, spans: InMemorySpanExporter, path: str
) -> None:
    p = _provider(f"{base}/{path}")
    try:
        await _call(p, 5)
        within_s = 0.2 if path == "slow" else 5
        through_sdk, traced = await _both(p, spans, within_s, _stream)
        assert traced == through_sdk
        if path == "sse":
            answer, span = traced
            assert answer[0] == "ok" and len(answer[2]) == 3
            assert dict(span["attributes"])["llm.token_count.total"] == 3
    finally:
        await p.aclose()


@pytest.mark.parametrize("path", ["sse", "s400", "s429", "s500", "slow"])
async def test_the_plain_stream_answers_and_raises_as_request_does(
    base: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _provider(f"{base}/{path}")
    try:
        await _call(p, 5)
        within_s = 0.2 if path == "slow" else 5
        assert p._plain_call.usable()
        monkeypatch.setattr(adapter._PlainCall, "usable", lambda self: False)
        through_sdk = await _stream(p, within_s)
        monkeypatch.undo()
        taken: list[bool] = []
        real = adapter._PlainCall.stream

        async def spy(self: Any, options: Any) -> Any:
            taken.append(True)
            return await real(self, options)

        monkeypatch.setattr(adapter._PlainCall, "stream", spy)
        assert await _stream(p, within_s) == through_sdk
        assert taken == [True]
        if path == "sse":
            assert through_sdk[:2] == ("ok", "_ChunkStream") and len(through_sdk[2]) == 3
    finally:
        await p.aclose()


async def test_the_raw_completion_parses_as_the_sdk_does(base: str, spans: Any) -> None:
    """The model OpenInference reads its output from: the same as the SDK's parse gives,
    request id included, for a body that validates and for ones that take the SDK's way."""
    for path in ("ok", "surrogate", "loose", "text"):
        p = _provider(f"{base}/{path}")
        try:
            await _call(p, 5)
            options = p._chat_options.model_copy(
                update={"json_data": {"model": "m", "messages": []}, "timeout": 5}
            )
            sdk = (await p.client.request(ChatCompletion, options)).parse()
            ours = (await p._traced_call(ChatCompletion, options)).parse()
            assert type(ours) is type(sdk)
            assert ours.model_dump() == sdk.model_dump()
            if path != "surrogate":  # a lone surrogate cannot be written as JSON by either
                assert ours.model_dump_json() == sdk.model_dump_json()
            assert ours.model_fields_set == sdk.model_fields_set
            assert ours._request_id == sdk._request_id == "r1"
        finally:
            await p.aclose()


async def test_the_traced_call_steps_aside_for_any_other_request(
    base: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrapt

    p = _provider(f"{base}/ok")
    try:
        assert p._traced_call.wrapper() is None  # the platform is not known before the first call
        await _call(p, 5)
        assert p._traced_call.wrapper() is not None
        instrumented = vars(openai.AsyncOpenAI)["request"]

        # a second wrapper around OpenInference's
        async def outer(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            return await wrapped(*args, **kwargs)

        monkeypatch.setattr(
            openai.AsyncOpenAI, "request", wrapt.FunctionWrapper(instrumented, outer)
        )
        assert p._traced_call.wrapper() is None
        monkeypatch.undo()
        assert p._traced_call.wrapper() is not None

        # another instrumentor's wrapper of the SDK's `request`
        other = wrapt.FunctionWrapper(instrumented.__wrapped__, outer)
        monkeypatch.setattr(openai.AsyncOpenAI, "request", other)
        assert p._traced_call.wrapper() is None
        monkeypatch.undo()

        # OpenInference's wrapper with an `enabled` switch
        switched = wrapt.FunctionWrapper(
            instrumented.__wrapped__, instrumented._self_wrapper, enabled=lambda: True
        )
        monkeypatch.setattr(openai.AsyncOpenAI, "request", switched)
        assert p._traced_call.wrapper() is None
        monkeypatch.undo()

        # the SDK's `request` patched on the base client
        from openai._base_client import AsyncAPIClient

        async def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            return None

        monkeypatch.setattr(AsyncAPIClient, "request", patched)
        assert p._traced_call.wrapper() is None
        monkeypatch.undo()

        # a client that is not plain (a provider runtime), or the SDK's debug log on
        monkeypatch.setattr(p.client, "_provider_runtime", object())
        assert p._traced_call.wrapper() is None
        monkeypatch.undo()
        assert p._traced_call.wrapper() is not None
    finally:
        await p.aclose()


async def test_without_the_instrumentor_the_plain_call_is_taken(base: str) -> None:
    p = _provider(f"{base}/ok")
    try:
        await _call(p, 5)
        assert p._traced_call.wrapper() is None
        assert p._plain_call.usable()
    finally:
        await p.aclose()


def test_the_raw_response_is_checked_to_be_as_known(monkeypatch: pytest.MonkeyPatch) -> None:
    assert adapter._raw_response_as_known()  # the installed SDK: as the traced call uses it

    class Renamed:  # a release whose raw response is built otherwise
        _cast_to: Any
        _stream: bool
        http_response: Any

        def __init__(self, *, raw: Any, cast_to: Any, client: Any, options: Any, mode: str) -> None:
            pass

        def _parse(self, *, to: Any = None) -> Any:
            return None

    monkeypatch.setattr(adapter, "LegacyAPIResponse", Renamed)
    assert not adapter._raw_response_as_known()


async def test_a_raw_response_laid_out_otherwise_leaves_the_call_to_request(
    base: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter, "_RAW_RESPONSE_AS_KNOWN", False)
    p = _provider(f"{base}/ok")
    try:
        await _call(p, 5)
        assert p._traced_call.wrapper() is None
        assert (await _call(p, 5))[0] == "ok"
        assert len(spans.get_finished_spans()) == 2  # recorded by the wrapper around `request`
    finally:
        await p.aclose()


@pytest.mark.parametrize("path", ["ok", "s400"])
async def test_openinferences_span_is_the_same_from_the_gateways_lean_tracer(
    base: str, path: str
) -> None:
    """The gateway's tracer provider makes OpenInference's span too (app/lean_spans.py): every
    attribute, in order, as the SDK's own provider records it."""
    from opentelemetry.sdk.trace import SpanProcessor

    from app.lean_spans import LeanSpan, LeanTracerProvider

    class Started(SpanProcessor):
        def __init__(self) -> None:
            self.classes: list[type] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.classes.append(type(span))

    shapes = []
    for kind in (LeanTracerProvider, TracerProvider):
        provider, started = kind(), Started()
        provider.add_span_processor(started)
        p = _provider(f"{base}/{path}")
        try:
            with openai_spans(provider) as exporter:
                answer = await _call(p, 5)
        finally:
            await p.aclose()
        (span,) = exporter.get_finished_spans()
        assert (started.classes == [LeanSpan]) == (kind is LeanTracerProvider)
        shapes.append((answer, _span_shape(span)))
    assert shapes[0] == shapes[1]
    assert len(shapes[0][1]["attributes"]) > 5
