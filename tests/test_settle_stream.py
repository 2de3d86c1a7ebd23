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
