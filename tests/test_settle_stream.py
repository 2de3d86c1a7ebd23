"""settle_stream (app/instrumentors.py): a finished OpenInference stream lets go of its
accumulator, so that its `__del__` does not work out the span's output attributes again."""

from __future__ import annotations

from types import SimpleNamespace

from openinference.instrumentation.openai._stream import _Stream
from openinference.instrumentation.openai._with_span import _WithSpan
from opentelemetry.sdk.trace import TracerProvider

from app.instrumentors import settle_stream


class CountingAccumulator:
    def __init__(self) -> None:
        self.asked = 0

    def process_chunk(self, chunk: object) -> None:
        return None

    def get_attributes(self):
        self.asked += 1
        yield "output.value", "answer"

    def get_extra_attributes(self):
        self.asked += 1
        yield "llm.token_count.total", 3


class Chunks:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def stream() -> tuple[_Stream, CountingAccumulator, list]:
    provider = TracerProvider(shutdown_on_exit=False)
    span = provider.get_tracer("t").start_span("ChatCompletion")
    with_span = _WithSpan(span=span, context_attributes={}, extra_attributes={})
    accumulator = CountingAccumulator()
    return _Stream(Chunks(), with_span, accumulator), accumulator, [span]


async def test_a_finished_stream_is_not_worked_out_again() -> None:
    wrapped, accumulator, (span,) = stream()
    async with wrapped:
        pass  # the adapter leaves the stream: the wrapper ends its span with what it has
    assert accumulator.asked == 2 and not span.is_recording()
    assert span.attributes["output.value"] == "answer"
    settle_stream(wrapped)
    wrapped.__del__()  # what collecting it does
    assert accumulator.asked == 2


async def test_without_settling_the_wrapper_works_it_out_again() -> None:
    """What settle_stream saves: this layout of the wrapper recomputes on every finish."""
    wrapped, accumulator, _ = stream()
    async with wrapped:
        pass
    wrapped.__del__()
    assert accumulator.asked == 4


def test_an_unfinished_stream_or_another_object_is_left_alone() -> None:
    wrapped, accumulator, _ = stream()
    settle_stream(wrapped)  # its span still open: the accumulator is still needed
    assert wrapped._self_response_accumulator is accumulator
    settle_stream(Chunks())  # untraced, or another instrumentor's stream
    settle_stream(SimpleNamespace(_self_with_span=SimpleNamespace()))  # another layout


class EndingChunks(Chunks):
    """An SDK stream of one chunk, then its end."""

    def __init__(self, chunks: list) -> None:
        self._chunks = iter(chunks)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None


async def test_the_openai_adapter_settles_a_finished_stream_before_leaving_it(monkeypatch) -> None:
    """The adapter reads the stream to its end (the wrapper finishes its span there), then
    leaves `async with`, whose exit finishes once more: by then there is nothing to work out."""
    import orjson

    from app.chat import ChatRequest, Message, StreamFinish
    from providers.base import ModelConfig
    from providers.openai import OpenAIConfig, OpenAIProvider
    from providers.openai_chunks import Chunk

    data = {"model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    provider_ = TracerProvider(shutdown_on_exit=False)
    span = provider_.get_tracer("t").start_span("ChatCompletion")
    with_span = _WithSpan(span=span, context_attributes={}, extra_attributes={})
    accumulator = CountingAccumulator()
    wrapped = _Stream(EndingChunks([Chunk(data, orjson.dumps(data))]), with_span, accumulator)
    adapter = OpenAIProvider("p", OpenAIConfig(type="openai", api_key="k"))

    async def post_stream(params):
        return wrapped

    monkeypatch.setattr(adapter, "_post_stream", post_stream)
    request = ChatRequest(messages=[Message(role="user", content="hi")])
    events = [e async for e in adapter.stream(ModelConfig(provider="p", model="m"), request)]
    assert isinstance(events[-1], StreamFinish)
    assert not span.is_recording()
    assert accumulator.asked == 2  # once, at the end of the stream
