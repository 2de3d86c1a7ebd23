"""The whole answer OpenInference rebuilds from a stream's chunks (providers/openai_chunks.py
`StreamedAnswer`): built by validation where the data allows, and read by the instrumentor into
exactly the span attributes the SDK's `construct` gives."""

from __future__ import annotations

import copy
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

from providers.openai import _validated_output
from providers.openai_chunks import Chunk, StreamedAnswer

BASE = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}


def _chunk(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


USAGE = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}

STREAMS = {
    "text with usage": [
        _chunk(choices=[_choice({"role": "assistant", "content": ""})]),
        _chunk(choices=[_choice({"content": "Rain "})]),
        _chunk(choices=[_choice({"content": "taps."})]),
        _chunk(choices=[_choice({}, "stop")]),
        _chunk(choices=[], usage=USAGE),
    ],
    "usage with details": [
        _chunk(choices=[_choice({"role": "assistant", "content": "Hi"}, "length")]),
        _chunk(
            choices=[],
            usage={
                **USAGE,
                "prompt_tokens_details": {"cached_tokens": 3},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        ),
    ],
    "tool calls": [
        _chunk(
            choices=[
                _choice(
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    }
                )
            ]
        ),
        _chunk(
            choices=[
                _choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]})
            ]
        ),
        _chunk(
            choices=[_choice({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})]
        ),
        _chunk(choices=[_choice({}, "tool_calls")]),
    ],
    "extra fields": [
        _chunk(
            system_fingerprint="fp_1",
            service_tier="default",
            obfuscation="abc",
            choices=[_choice({"role": "assistant", "content": "x", "refusal": None})],
        ),
        _chunk(choices=[_choice({}, "stop")]),
    ],
    # What strict validation refuses: the SDK's construct, as before.
    "cut before its finish": [_chunk(choices=[_choice({"role": "assistant", "content": "x"})])],
    "unknown finish reason": [
        _chunk(choices=[_choice({"role": "assistant", "content": "x"}, "something_new")])
    ],
    "a count sent as a string": [
        _chunk(choices=[_choice({"role": "assistant", "content": "x"}, "stop")]),
        _chunk(choices=[], usage={**USAGE, "prompt_tokens": "21"}),
    ],
}

VALIDATED = {"text with usage", "usage with details", "tool calls", "extra fields"}


def _attributes(chunks: list[dict[str, Any]], kind: Any) -> dict[str, Any]:
    accumulator = _ChatCompletionAccumulator(
        request_parameters={"model": "gpt-4o-mini", "messages": []},
        chat_completion_type=kind,
        response_attributes_extractor=_ResponseAttributesExtractor(openai=openai),
    )
    for data in copy.deepcopy(chunks):
        accumulator.process_chunk(Chunk(data, orjson.dumps(data)))
    return {
        **dict(accumulator.get_attributes()),
        **dict(accumulator.get_extra_attributes()),
    }


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_span_attributes_are_those_of_the_sdks_construct(name, monkeypatch) -> None:
    chunks = STREAMS[name]
    expected = _attributes(chunks, ChatCompletion)
    assert expected["llm.model_name"] == "gpt-4o-mini"

    constructed: list[Any] = []
    sdk_construct = ChatCompletion.construct

    def counting(**values: Any) -> Any:
        constructed.append(values)
        return sdk_construct(**values)

    monkeypatch.setattr(ChatCompletion, "construct", counting)
    assert _attributes(chunks, StreamedAnswer) == expected
    # Validated where the data allows (no construct), else built as before.
    assert bool(constructed) == (name not in VALIDATED)


@pytest.mark.parametrize("name", sorted(VALIDATED))
def test_the_validated_answer_holds_what_construct_gives(name) -> None:
    accumulator = _ChatCompletionAccumulator({}, ChatCompletion)
    for data in copy.deepcopy(STREAMS[name]):
        accumulator.process_chunk(Chunk(data, orjson.dumps(data)))
    values = accumulator._result()
    assert values is not None
    built = StreamedAnswer.construct(**values)
    assert type(built) is ChatCompletion
    assert built.object == "chat.completion.chunk"
    assert built.model_dump(warnings=False) == ChatCompletion.construct(**values).model_dump(
        warnings=False
    )


def test_only_openinferences_chat_accumulator_is_given_it() -> None:
    class Plain:
        pass

    accumulator = _ChatCompletionAccumulator({}, ChatCompletion)
    wrapped = _Stream(Plain(), with_span=_Span(), response_accumulator=accumulator)
    _validated_output(wrapped)
    assert accumulator._chat_completion_type is StreamedAnswer
    other = _ChatCompletionAccumulator({}, ChatCompletion.__base__)  # another type: left alone
    _validated_output(_Stream(Plain(), with_span=_Span(), response_accumulator=other))
    assert other._chat_completion_type is ChatCompletion.__base__
    _validated_output(Plain())  # untraced: nothing to do


class _Span:
    is_finished = False

    def finish_tracing(self, **_: Any) -> None:
        return None
