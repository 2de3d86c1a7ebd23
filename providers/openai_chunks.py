"""A streamed chat completion's chunks as the openai adapter reads them, and what OpenInference's
stream wrapper makes of them.

The adapter parses each chunk once with orjson (`Chunk`); OpenInference's wrapper, which reads
every chunk of a traced stream, calls its `model_dump` and merges what it gets into a whole
answer in its accumulator, then rebuilds that answer as a `ChatCompletion` for the span. Three
things here make that cheaper without changing the span, each only where a trial on the
accumulator's class shows the same attributes either way: a chunk leaves out the top-level
values the accumulator already holds (`held_values`), a chunk of text alone is appended straight
to the answer (`take_text_directly`), and the whole answer is built by validation
(`StreamedAnswer`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import orjson
import pydantic
from openai.types.chat import ChatCompletion


def parse_json(data: bytes) -> Any:
    """Parsed JSON; what orjson refuses (NaN, a lone surrogate) gets the standard library's go."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


class Chunk:
    """One streamed chunk: its JSON parsed (`data`) and as sent (`raw`).

    `model_dump` is for the OpenInference instrumentor, which reads every chunk of a stream that
    way and edits what it gets: a fresh parse keeps `data` untouched. Given what its chat
    accumulator holds (`held`, its top-level values: `held_values`), it leaves out the fields
    the accumulator would replace by an equal value (id, object, created, model, repeated in
    every chunk): it merges each through a chain of type checks, to the same end.
    """

    __slots__ = ("data", "held", "raw")

    def __init__(
        self, data: dict[str, Any], raw: bytes, held: dict[str, Any] | None = None
    ) -> None:
        self.data = data
        self.raw = raw
        self.held = held

    def model_dump(self, **_: Any) -> dict[str, Any]:
        dumped = parse_json(self.raw)
        held = self.held
        if held and type(dumped) is dict:
            for key in [
                key
                for key, value in dumped.items()
                if type(value) in _SCALARS
                and type(kept := held.get(key)) is type(value)
                and kept == value
            ]:
                del dumped[key]
        return dumped


# What a chunk's top level may repeat that `Chunk.model_dump` leaves out: a float is not (an
# equal one may print otherwise: 0.0 and -0.0), nor anything with parts.
_SCALARS = frozenset({str, int, bool})
# The accumulator classes found to give the same attributes with and without the repeats.
TRIMS_ALIKE: dict[type, bool] = {}


def held_values(accumulator: Any) -> dict[str, Any] | None:
    """The top-level values OpenInference's chat accumulator holds, where its class is found
    (once) to accumulate trimmed chunks into the same span attributes as whole ones."""
    held = getattr(getattr(accumulator, "_values", None), "_values", None)
    if type(held) is not dict:
        return None
    kind = type(accumulator)
    alike = TRIMS_ALIKE.get(kind)
    if alike is None:
        alike = TRIMS_ALIKE[kind] = trims_alike(kind)
    return held if alike else None


# Chunks whose top level repeats, changes, changes type, or goes missing; and malformed ones.
_TRIAL_CHUNKS = (
    b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":'
    b'"f","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,'
    b'"logprobs":null}]}',
    b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":'
    b'null,"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}',
    b'{"id":"c1","object":"chat.completion.chunk","created":true,"model":"m2","choices":'
    b'[{"index":0,"delta":{"content":"b"}}]}',
    b'{"id":"c1","created":1,"model":"m2","extra":{"a":1},"choices":[{"index":[0]}]}',
    b'{"id":"c2","created":1,"model":"m","extra":"x","choices":[1]}',
    b'{"id":"c2","created":1.0,"model":"m","extra":"x","choices":"ab"}',
    b'{"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}',
    b'{"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}',
)


def trims_alike(kind: type) -> bool:
    """Whether an accumulator of this class, fed the trial chunks trimmed of what it holds,
    ends with the same attributes as one fed them whole (and trimming left something out).
    Its other attributes are read from the same merged answer."""
    try:
        whole = kind({}, ChatCompletion)
        trimmed = kind({}, ChatCompletion)
        held = trimmed._values._values
        if type(held) is not dict:
            return False
        left_out = 0
        for raw in _TRIAL_CHUNKS:
            with contextlib.suppress(Exception):  # as its wrapper: logged there, and skipped
                whole.process_chunk(Chunk({}, raw))
            chunk = Chunk({}, raw, held)
            left_out += len(parse_json(raw)) - len(chunk.model_dump())
            with contextlib.suppress(Exception):
                trimmed.process_chunk(chunk)
        return left_out > 0 and list(whole.get_attributes()) == list(trimmed.get_attributes())
    except Exception:  # another layout of the class
        return False


# OpenInference's accumulator classes, each with its subclass that takes a chunk of text alone
# directly (`take_text_directly`), or None where a trial found that it would end otherwise.
TEXT_TAKING: dict[type, type | None] = {}


def take_text_directly(accumulator: Any) -> None:
    """Let OpenInference's chat accumulator take a chunk that only carries more text of an
    answer it holds (most chunks of a stream) by appending the text, where its class is found
    (once) to end with the same attributes either way.

    It takes every chunk by merging the whole of it through a chain of type checks, nested
    three deep, inside a `warnings.catch_warnings` block: ~9 µs a chunk here, most of what a
    traced stream costs per chunk beyond an untraced one. For such a chunk all that merge does
    is append the text to the answer's content and set its index to the same value again: the
    rest of the chunk is the top-level values the accumulator holds already, equal, or nulls,
    which it skips. Any other chunk is merged as before."""
    kind = type(accumulator)
    if kind not in TEXT_TAKING:
        TEXT_TAKING[kind] = text_taking(kind)
    taking = TEXT_TAKING[kind]
    if taking is not None:
        with contextlib.suppress(TypeError):  # another layout: merged as before
            accumulator.__class__ = taking


def text_of(chunk: Any, values_kind: type, text_kind: type) -> tuple[Any, str] | None:
    """(the text accumulator of the answer `chunk` continues, the chunk's text) where the chunk
    carries nothing else the accumulator would keep: one choice, whose index the accumulator
    holds already, with a delta of `content` alone and every other field null; at the top
    level, beside `choices`, the scalars it holds (equal, of the same type) or nulls. Else
    None. `values_kind` and `text_kind`: the accumulator's classes of a merged mapping and of
    merged text."""
    held = chunk.held if type(chunk) is Chunk else None
    data = chunk.data if held is not None else None
    if type(data) is not dict:
        return None
    choices = None
    for key, value in data.items():
        if key == "choices":
            choices = value
        elif value is not None and not (
            type(value) in _SCALARS and type(kept := held.get(key)) is type(value) and kept == value
        ):
            return None
    if type(choices) is not list or len(choices) != 1 or type(choices[0]) is not dict:
        return None
    choice = choices[0]
    index, delta = choice.get("index"), choice.get("delta")
    if type(index) is not int or type(delta) is not dict or len(delta) != 1:
        return None
    text = delta.get("content")
    if type(text) is not str or any(
        value is not None for key, value in choice.items() if key != "index" and key != "delta"
    ):
        return None
    try:
        answer = held["choices"]._indexed.get(index)
        kept = answer._values.get("index") if type(answer) is values_kind else None
        if type(kept) is not int or kept != index:  # else the merge would change it
            return None
        message = answer._values["message"]
        content = message._values["content"] if type(message) is values_kind else None
    except (AttributeError, KeyError, TypeError):
        return None
    if type(content) is not text_kind:
        return None
    return content, text


def text_taking(kind: type) -> type | None:
    """A subclass of OpenInference's accumulator class `kind` that appends a chunk of text
    alone (`text_of`), if an accumulator of it, fed the trial chunks, ends with the same
    attributes as one of `kind` (and took some chunk that way); else None."""
    module = sys.modules.get(kind.__module__)
    values_kind = getattr(module, "_ValuesAccumulator", None)
    text_kind = getattr(module, "_StringAccumulator", None)
    if not isinstance(values_kind, type) or not isinstance(text_kind, type):
        return None

    class TextTaking(kind):  # type: ignore[misc,valid-type]
        __slots__ = ()

        def process_chunk(self, chunk: Any) -> None:
            # `held` names the accumulator the chunk was read for: this one, or no shortcut
            mine = getattr(chunk, "held", None) is self._values._values
            found = text_of(chunk, values_kind, text_kind) if mine else None
            if found is None:
                super().process_chunk(chunk)
                return
            self._is_null = False
            self._cached_result = None
            content, text = found
            content.__iadd__(text)  # `+=`: kept only when not empty

    try:
        whole = kind({}, ChatCompletion)
        taking = kind({}, ChatCompletion)
        taking.__class__ = TextTaking
        held = taking._values._values
        taken = 0
        for raw in _TRIAL_CHUNKS:
            with contextlib.suppress(Exception):  # as its wrapper: logged there, and skipped
                whole.process_chunk(Chunk(parse_json(raw), raw, whole._values._values))
            chunk = Chunk(parse_json(raw), raw, held)
            taken += text_of(chunk, values_kind, text_kind) is not None
            with contextlib.suppress(Exception):
                taking.process_chunk(chunk)
        alike = list(whole.get_attributes()) == list(taking.get_attributes())
        return TextTaking if taken and alike else None
    except Exception:  # another layout of the class
        return None


class StreamedAnswer:
    """Builds the `ChatCompletion` OpenInference makes of a whole stream to read its output
    attributes from: with the SDK's `construct` (its pure-Python walk of every field, ~170 µs
    for a short answer) only where strict validation (~17 µs) refuses the data. The data is the
    chunks merged, still marked `chat.completion.chunk`: validated as a `chat.completion`, and
    the mark put back, so that the model holds what `construct` would have given it. Strict: a
    value validation would convert (a number sent as a string) takes `construct`'s way."""

    @staticmethod
    def construct(**values: Any) -> ChatCompletion:
        kind = values.get("object")
        if kind == "chat.completion.chunk":
            try:
                built = ChatCompletion.model_validate(
                    {**values, "object": "chat.completion"}, strict=True
                )
            except pydantic.ValidationError:
                pass
            else:
                built.__dict__["object"] = kind
                return built
        return ChatCompletion.construct(**values)
