"""A traced stream's chunks of text alone, appended straight to OpenInference's accumulated answer
(providers/openai_chunks.py `take_text_directly`): the span ends with the same attributes, each in
order, as when the accumulator merges every chunk itself; any chunk carrying more than text is
merged by it as before; an accumulator class that would end otherwise keeps its own way."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion
from openinference.instrumentation.openai import _response_accumulator as oi_accumulation
from openinference.instrumentation.openai._response_accumulator import (
    _ChatCompletionAccumulator,
)
from openinference.instrumentation.openai._response_attributes_extractor import (
    _ResponseAttributesExtractor,
)
from openinference.instrumentation.openai._stream import _Stream

from providers import openai_chunks
from providers.openai import _ChunkStream, _validated_output
from providers.openai_chunks import (
    Chunk,
    StreamedAnswer,
    held_values,
    take_text_directly,
    text_of,
    text_taking,
)
from tests.test_openai_stream_repeats import ALL, BASE


def _text_taking_class() -> type:
    """The class the adapter gives OpenInference's chat accumulator (made, and tried, once)."""
    accumulator = _ChatCompletionAccumulator({}, ChatCompletion)
    take_text_directly(accumulator)
    return type(accumulator)


TEXT_TAKING = _text_taking_class()
KINDS = (oi_accumulation._ValuesAccumulator, oi_accumulation._StringAccumulator)


def _choice(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}


def _chunk(*choices: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**BASE, **fields, "choices": list(choices)}


TEXTY = {
    "words": [
        _chunk(_choice(role="assistant", content="")),
        *(_chunk(_choice(content=w)) for w in ("Rain ", "taps ", "the ", "", "window.")),
        _chunk(_choice(finish="stop")),
        _chunk(usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ],
    "text before any role": [_chunk(_choice(content=w)) for w in ("a", "b", "c")],
    "two answers, interleaved": [
        _chunk(_choice(0, role="assistant", content="")),
        _chunk(_choice(1, content="x")),  # index 1 not yet held: merged
        _chunk(_choice(0, content="a")),
        _chunk(_choice(1, content="y")),
        _chunk(_choice(0, content="b"), _choice(1, content="z")),  # two choices: merged
        _chunk(_choice(0, finish="stop")),
        _chunk(_choice(1, content="!", finish="length")),
    ],
    "text beside other fields": [
        _chunk(_choice(role="assistant", content=""), system_fingerprint="fp"),
        _chunk(_choice(content="a"), system_fingerprint="fp"),  # held, equal
        _chunk(_choice(content="b"), system_fingerprint="fp2"),  # changed
        _chunk(_choice(content="c"), system_fingerprint=None),  # a null
        _chunk(_choice(content="d", refusal=None)),  # a second delta field
        _chunk(_choice(content="e", role="assistant")),
        _chunk({**_choice(content="f"), "logprobs": {"content": []}}),
        _chunk({**_choice(content="g"), "extra": None}),
        _chunk(_choice(content="h"), service_tier="default"),  # not held
        _chunk(_choice(content="i"), created=1.0),  # another type
        _chunk(_choice(content=None)),
        _chunk(_choice(content="j"), model="m2"),
        _chunk(_choice(content="k")),
    ],
    "text after the finish": [
        _chunk(_choice(role="assistant", content="a", finish="stop")),
        _chunk(_choice(content="b")),
    ],
}


def _accumulator(kind: type) -> Any:
    return kind(
        request_parameters={"model": "m", "messages": []},
        chat_completion_type=StreamedAnswer,
        response_attributes_extractor=_ResponseAttributesExtractor(openai=openai),
    )


def _fed(chunks: list[dict[str, Any]], taking: bool) -> tuple[list[Any], int]:
    """The attributes an accumulator ends with, fed the chunks trimmed of what it holds (as
    the adapter feeds them), taking text alone directly or not; and how many it took so."""
    accumulator = _accumulator(_ChatCompletionAccumulator)
    held = held_values(accumulator)
    assert held is not None
    if taking:
        take_text_directly(accumulator)
        assert type(accumulator) is TEXT_TAKING
    taken = 0
    for data in copy.deepcopy(chunks):
        chunk = Chunk(data, orjson.dumps(data), held)
        taken += text_of(chunk, *KINDS) is not None
        # as OpenInference's wrapper: a failure is logged there, and the stream goes on
        with contextlib.suppress(Exception):
            accumulator.process_chunk(chunk)
    return [*accumulator.get_attributes(), *accumulator.get_extra_attributes()], taken


def test_the_installed_accumulator_takes_text_directly() -> None:
    assert TEXT_TAKING is not _ChatCompletionAccumulator
    assert issubclass(TEXT_TAKING, _ChatCompletionAccumulator)
    assert text_taking(_ChatCompletionAccumulator) is not None  # the trial, run again


@pytest.mark.parametrize("name", sorted({**ALL, **TEXTY}))
def test_the_attributes_are_those_of_every_chunk_merged(name: str) -> None:
    chunks = {**ALL, **TEXTY}[name]
    assert _fed(chunks, taking=True)[0] == _fed(chunks, taking=False)[0]


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("words", 5),  # "" too: appending nothing is what the merge does with it
        ("text before any role", 2),  # the first registers the answer
        ("two answers, interleaved", 2),
        ("text beside other fields", 3),  # a, c and g; k's model and created no longer held
        ("text after the finish", 1),  # its null finish reason is skipped, as by the merge
    ],
)
def test_text_alone_is_what_is_taken_directly(
    name: str, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    merged: list[Any] = []
    merge = _ChatCompletionAccumulator.process_chunk

    def counted(self: Any, chunk: Any) -> None:
        merged.append(chunk)
        merge(self, chunk)

    monkeypatch.setattr(_ChatCompletionAccumulator, "process_chunk", counted)
    assert _fed(TEXTY[name], taking=True)[1] == taken
    assert len(merged) == len(TEXTY[name]) - taken  # the rest, merged by OpenInference


# Chunks of text alone, and of text with a little more, in any order, over three answers.
_texts = st.text(alphabet="ab \n\u00e9", max_size=3)
_extras = st.sampled_from(
    [{}, {"system_fingerprint": "fp"}, {"system_fingerprint": None}, {"model": "m2"}, {"x": 1}]
)
_deltas = st.one_of(
    st.builds(lambda t: {"content": t}, _texts),
    st.builds(lambda t: {"role": "assistant", "content": t}, _texts),
    st.just({}),
    st.builds(lambda t: {"content": t, "refusal": None}, _texts),
)
_choices = st.builds(
    lambda index, delta, finish: {"index": index, "delta": delta, "finish_reason": finish},
    st.integers(0, 2),
    _deltas,
    st.sampled_from([None, None, None, "stop"]),
)
_chunks = st.builds(
    lambda choices, extra: {**BASE, **extra, "choices": choices},
    st.lists(_choices, min_size=0, max_size=2),
    _extras,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_chunks, max_size=12))
def test_any_stream_ends_with_the_same_attributes(chunks: list[dict[str, Any]]) -> None:
    assert _fed(chunks, taking=True)[0] == _fed(chunks, taking=False)[0]


def test_a_chunk_not_from_the_adapter_or_untrimmed_is_merged() -> None:
    accumulator = _accumulator(_ChatCompletionAccumulator)
    held = held_values(accumulator)
    first, text = _chunk(_choice(role="assistant", content="")), _chunk(_choice(content="a"))
    accumulator.process_chunk(Chunk(first, orjson.dumps(first), held))
    assert text_of(Chunk(text, orjson.dumps(text), held), *KINDS) is not None
    assert text_of(Chunk(text, orjson.dumps(text)), *KINDS) is None  # nothing held given
    assert text_of(ChatCompletion, *KINDS) is None


def test_a_chunk_read_for_another_accumulator_is_merged_by_the_one_given_it() -> None:
    first, text = _chunk(_choice(role="assistant", content="")), _chunk(_choice(content="a"))
    one, other = (_accumulator(_ChatCompletionAccumulator) for _ in range(2))
    for accumulator in (one, other):
        take_text_directly(accumulator)
        held = held_values(accumulator)
        accumulator.process_chunk(Chunk(first, orjson.dumps(first), held))
    other.process_chunk(Chunk(text, orjson.dumps(text), held_values(one)))
    assert '"content": "a"' in dict(other.get_attributes())["output.value"]
    assert '"content"' not in dict(one.get_attributes())["output.value"]  # nothing added


class _KeyCounting(_ChatCompletionAccumulator):
    """An accumulator whose attributes depend on every chunk it merges."""

    __slots__ = ("_count",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._count = 0

    def process_chunk(self, chunk: Any) -> None:
        self._count += 1
        super().process_chunk(chunk)

    def get_attributes(self) -> Any:
        yield from super().get_attributes()
        yield "count", self._count


class _OtherLayout:
    def __init__(self, *args: Any) -> None:
        self._values = {"id": "c1"}


@pytest.mark.parametrize("kind", [_KeyCounting, _OtherLayout])
def test_an_accumulator_that_would_end_otherwise_merges_every_chunk(
    kind: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert text_taking(kind) is None
    monkeypatch.setitem(openai_chunks.TRIMS_ALIKE, kind, True)  # trimming alone is not the question
    instance = kind({}, ChatCompletion)
    if kind is _KeyCounting:
        instance._chat_completion_type = ChatCompletion
        stream = _ChunkStream.__new__(_ChunkStream)
        _validated_output(_Stream(stream, with_span=_Span(), response_accumulator=instance))
        assert stream._held is not None
    take_text_directly(instance)
    assert type(instance) is kind


def test_the_adapter_gives_openinferences_accumulator_the_text_taking_class() -> None:
    accumulator = _ChatCompletionAccumulator({}, ChatCompletion)
    stream = _ChunkStream.__new__(_ChunkStream)
    _validated_output(_Stream(stream, with_span=_Span(), response_accumulator=accumulator))
    assert type(accumulator) is TEXT_TAKING
    assert stream._held is accumulator._values._values


class _Span:
    is_finished = False

    def finish_tracing(self, **_: Any) -> None:
        return None
