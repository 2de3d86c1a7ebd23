"""What a traced stream's chunks give OpenInference's accumulator (providers/openai_chunks.py
`Chunk.model_dump` with `held`): the top-level fields it already holds, equal, are left out, and
the span is the same as with every chunk whole (each attribute, in order); an accumulator that
would end otherwise, or is laid out otherwise, gets every chunk whole."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion
from openinference.instrumentation.openai._response_accumulator import (
    _ChatCompletionAccumulator,
)
from openinference.instrumentation.openai._response_attributes_extractor import (
    _ResponseAttributesExtractor,
)
from openinference.instrumentation.openai._stream import _Stream
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers import openai_chunks
from providers.openai import OpenAIConfig, OpenAIProvider, _ChunkStream, _validated_output
from providers.openai_chunks import Chunk, StreamedAnswer, held_values, trims_alike
from tests.fakes.server import serve_app
from tests.test_streamed_answer import STREAMS
from tests.tracing_helpers import openai_spans

BASE = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


# Top-level fields that repeat, change, change type, come and go, or carry parts.
VARYING = [
    {**BASE, "system_fingerprint": "fp", "choices": [_choice({"role": "assistant"})]},
    {**BASE, "system_fingerprint": None, "choices": [_choice({"content": "a"})]},
    {**BASE, "model": "m2", "created": True, "choices": [_choice({"content": "b"})]},
    {**BASE, "created": 1.0, "service_tier": "default", "choices": [_choice({"content": "c"})]},
    {**BASE, "created": 1, "extra": {"a": 1}, "choices": [_choice({"content": "d"})]},
    {**BASE, "extra": "x", "choices": [_choice({"content": "e"})]},
    {**BASE, "extra": "x", "temperature": 0.0, "choices": [_choice({}, "stop")]},
    {**BASE, "temperature": -0.0, "choices": [], "usage": {"prompt_tokens": 1}},
]
# Malformed chunks the accumulator fails on partway (its wrapper logs that and goes on).
MALFORMED = [
    {**BASE, "choices": [_choice({"role": "assistant", "content": "x"})]},
    {**BASE, "model": "m2", "choices": [{"index": [0]}]},
    {**BASE, "model": "m2", "choices": [1]},
    {**BASE, "model": "m2", "choices": "ab"},
    {**BASE, "model": "m2", "choices": [_choice({"content": "y"}, "stop")]},
]
ALL = {**STREAMS, "varying": VARYING, "malformed": MALFORMED}


def _attributes(chunks: list[dict[str, Any]], trimmed: bool) -> list[Any]:
    accumulator = _ChatCompletionAccumulator(
        request_parameters={"model": "m", "messages": []},
        chat_completion_type=StreamedAnswer,
        response_attributes_extractor=_ResponseAttributesExtractor(openai=openai),
    )
    held = held_values(accumulator) if trimmed else None
    assert (held is not None) == trimmed
    for data in copy.deepcopy(chunks):
        # as OpenInference's wrapper: a failure is logged there, and the stream goes on
        with contextlib.suppress(Exception):
            accumulator.process_chunk(Chunk(data, orjson.dumps(data), held))
    return [*accumulator.get_attributes(), *accumulator.get_extra_attributes()]


def test_the_installed_accumulator_ends_alike_on_trimmed_chunks() -> None:
    assert trims_alike(_ChatCompletionAccumulator)


@pytest.mark.parametrize("name", sorted(ALL))
def test_the_attributes_are_those_of_whole_chunks(name: str) -> None:
    assert _attributes(ALL[name], trimmed=True) == _attributes(ALL[name], trimmed=False)


def test_only_equal_scalars_the_accumulator_holds_are_left_out() -> None:
    held: dict[str, Any] = {
        "id": "c1",
        "created": 1,
        "flag": True,
        "temperature": 0.0,
        "model": "m",
        "usage": {"a": 1},
        "choices": object(),
    }
    data = {
        "id": "c1",  # left out
        "created": True,  # another type
        "flag": True,  # left out
        "temperature": 0.0,  # a float: kept
        "model": "m2",  # changed
        "usage": {"a": 1},  # has parts
        "choices": [],
        "new": "n",  # not held
        "none": None,
    }
    dumped = Chunk(data, orjson.dumps(data), held).model_dump()
    assert dumped == {k: v for k, v in data.items() if k not in ("id", "flag")}
    assert list(dumped) == [k for k in data if k not in ("id", "flag")]
    assert Chunk(data, orjson.dumps(data)).model_dump() == data
    assert Chunk(data, orjson.dumps(data), {}).model_dump() == data


class _KeyCounting(_ChatCompletionAccumulator):
    """An accumulator whose attributes depend on every field of every chunk."""

    __slots__ = ("_keys",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keys: list[str] = []

    def process_chunk(self, chunk: Any) -> None:
        self._keys.extend(chunk.model_dump())
        super().process_chunk(chunk)

    def get_attributes(self) -> Any:
        yield from super().get_attributes()
        yield "keys", ",".join(self._keys)


class _OtherLayout:
    def __init__(self, *args: Any) -> None:
        self._values = {"id": "c1"}


class _OtherSignature(_ChatCompletionAccumulator):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__({}, ChatCompletion)


@pytest.mark.parametrize("kind", [_KeyCounting, _OtherLayout, _OtherSignature])
def test_an_accumulator_that_would_end_otherwise_gets_whole_chunks(kind: type) -> None:
    assert not trims_alike(kind)
    if kind is not _OtherLayout:
        instance = kind({}, ChatCompletion) if kind is _KeyCounting else kind()
        assert held_values(instance) is None
        stream = _ChunkStream.__new__(_ChunkStream)
        _validated_output(_Stream(stream, with_span=_Span(), response_accumulator=instance))
        assert stream._held is None
    assert held_values(_OtherLayout()) is None
    accumulator = _ChatCompletionAccumulator({}, ChatCompletion)
    stream = _ChunkStream.__new__(_ChunkStream)
    _validated_output(_Stream(stream, with_span=_Span(), response_accumulator=accumulator))
    assert stream._held is accumulator._values._values


class _Span:
    is_finished = False

    def finish_tracing(self, **_: Any) -> None:
        return None


# ---- through the adapter, traced by OpenInference ------------------------------------------------

EVENTS = b"".join(f"data: {orjson.dumps(c).decode()}\n\n".encode() for c in VARYING) + (
    b"data: [DONE]\n\n"
)


async def _events(request: Request) -> Response:
    return Response(EVENTS, media_type="text/event-stream")


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", _events, methods=["POST"])])
    with ExitStack() as stack:
        yield stack.enter_context(serve_app(app))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """OpenInference's OpenAI instrumentor, recording into memory, for the test only."""
    with openai_spans() as exporter:
        yield exporter


async def test_a_traced_stream_records_the_span_of_whole_chunks(
    base: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = OpenAIProvider("p", OpenAIConfig(type="openai", api_key="k", base_url=f"{base}/v1"))
    dumped: list[int] = []
    real_dump = Chunk.model_dump

    def counting(self: Chunk, **kwargs: Any) -> Any:
        got = real_dump(self, **kwargs)
        dumped.append(len(orjson.loads(self.raw)) - len(got))
        return got

    monkeypatch.setattr(Chunk, "model_dump", counting)
    text_taking = openai_chunks.text_taking(
        _ChatCompletionAccumulator
    )  # its trial dumps chunks too
    outcomes = []
    try:
        # whole chunks; trimmed; trimmed, and a chunk of text alone appended
        # (providers/openai_chunks.py `take_text_directly`: here the second, whose only other
        # field is a null)
        for trimmed, taking in ((False, None), (True, None), (True, text_taking)):
            monkeypatch.setitem(openai_chunks.TRIMS_ALIKE, _ChatCompletionAccumulator, trimmed)
            monkeypatch.setitem(openai_chunks.TEXT_TAKING, _ChatCompletionAccumulator, taking)
            spans.clear()
            dumped.clear()
            params = {"model": "m", "messages": [], "stream": True, "timeout": 5}
            chunks = await p._post_stream(params)
            async with chunks:
                data = [chunk.data async for chunk in chunks]
            (span,) = spans.get_finished_spans()
            outcomes.append(
                (data, span.name, span.status.status_code, list(span.attributes.items()))
            )
            assert (sum(dumped) > 0) == trimmed
            assert len(dumped) == len(VARYING) - (taking is not None)
    finally:
        await p.aclose()
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][0] == VARYING
