"""The openai adapter reads a streamed body itself (providers/openai.py `_ChunkStream`): the
events it finds must be the ones the SDK's own decoder finds, however the body is framed and
however the network splits it, and an upstream's error chunk still ends the stream with an error.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from providers.openai import _SSEEvents
from tests.conftest import sse_events
from tests.fakes.server import serve_app

ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])
LINES = st.one_of(
    st.builds(lambda v: b"data: " + v, st.sampled_from([b"{}", b"[DONE]", b'{"a": 1}', b"x y"])),
    st.sampled_from([b"data:tight", b"data:", b"data", b"event: delta", b"event:", b"event"]),
    st.sampled_from([b": a comment", b"retryx: 1", b"other: field", b""]),
)


def _ours(pieces: list[bytes]) -> list[tuple[str | None, str]]:
    events = _SSEEvents()
    found = [e for piece in pieces for e in events.feed(piece)] + events.end()
    return [(event, data.decode()) for event, data in found]


def _sdk(pieces: list[bytes]) -> list[tuple[str | None, str]]:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def decode() -> list[tuple[str | None, str]]:
        return [(sse.event, sse.data) async for sse in SSEDecoder().aiter_bytes(body())]

    return asyncio.run(decode())


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.tuples(LINES, ENDINGS), max_size=12),
    tail=st.sampled_from([b"", b"\r", b"\n", b"data: unended"]),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_events_match_the_sdk_decoder_however_the_body_is_split(lines, tail, cuts) -> None:
    body = b"".join(line + ending for line, ending in lines) + tail
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    assert _ours(pieces) == _sdk(pieces)


def _chunk(delta: dict, **extra) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": extra.pop("finish", None)}
    body = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-2024", **extra}
    return json.dumps({**body, "choices": [choice] if delta is not None else []}).encode()


def _gateway(serve_gateway, stack, body: bytes) -> str:
    async def completions(request) -> Response:
        return Response(body, media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    upstream = stack.enter_context(serve_app(app))
    return serve_gateway(f"""
providers:
  up: {{type: openai, base_url: "{upstream}/v1", api_key: sk-test}}
models:
  m: {{provider: up, model: gpt-4o}}
routes:
  default: m
""")


def test_crlf_framing_comments_and_multiline_data_are_read(serve_gateway, stack) -> None:
    first = _chunk({"role": "assistant", "content": "Hel"})
    second = _chunk({"content": "lo"}).replace(b', "choices"', b',\r\ndata: "choices"')
    events = [
        b": keep-alive",
        b"data: " + first,
        b"data: " + second,
        b"event: message\r\ndata: " + _chunk({}, finish="stop"),
        b"data: " + _chunk(None, usage={"prompt_tokens": 4, "completion_tokens": 2}),
        b"data: [DONE]",
    ]
    base = _gateway(serve_gateway, stack, b"\r\n\r\n".join(events) + b"\r\n\r\n")
    ask = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
    out = sse_events(httpx.post(base + "/v1/chat", json=ask, timeout=10))
    assert [e["text"] for e in out if e["type"] == "delta"] == ["Hel", "lo"]
    end = out[-1]
    assert end["type"] == "end" and end["finish_reason"] == "stop" and "truncated" not in end
    assert end["model"] == "gpt-4o-2024"
    assert end["usage"] == {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}


def test_an_error_chunk_mid_stream_ends_it_with_an_error(serve_gateway, stack) -> None:
    events = [
        b"data: " + _chunk({"role": "assistant", "content": "Hel"}),
        b'data: {"error": {"message": "overloaded", "type": "server_error"}}',
        b"data: " + _chunk({"content": "never"}),
        b"data: [DONE]",
    ]
    base = _gateway(serve_gateway, stack, b"\n\n".join(events) + b"\n\n")
    ask = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    response = httpx.post(base + "/v1/chat/completions", json=ask, timeout=10)
    out = sse_events(response)
    texts = [e["choices"][0]["delta"].get("content") for e in out if e.get("choices")]
    assert texts == ["", "Hel"]
    assert out[-1]["error"]["type"] == "upstream_error", out[-1]
    assert "[DONE]" not in response.text
