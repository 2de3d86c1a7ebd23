"""/v1/chat through the openai adapter, pointed at a local fake OpenAI server."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import sse_events
from tests.fakes.openai_fake import Fail, Hang, OpenAIFake, Reply, Stream
from tests.fakes.server import serve_app

ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}


def config(primary: str, backup: str, *, retries: int = 0, timeout_s: float = 5) -> str:
    return f"""
providers:
  primary: {{type: openai, base_url: "{primary}/v1", api_key: sk-primary-secret}}
  backup: {{type: openai, base_url: "{backup}/v1", api_key: sk-backup-secret}}
models:
  smart: {{provider: primary, model: gpt-4o, timeout_s: {timeout_s}}}
  cheap: {{provider: backup, model: gpt-4o-mini, timeout_s: {timeout_s}}}
routes:
  default:
    failover:
      chain: [smart, cheap]
      retries: {retries}
      backoff: {{initial_s: 0.05, max_s: 0.2}}
  single: smart
"""


@pytest.fixture
def two_fakes(stack) -> tuple[OpenAIFake, str, OpenAIFake, str]:
    a, b = OpenAIFake("primary"), OpenAIFake("backup")
    return a, stack.enter_context(serve_app(a.app)), b, stack.enter_context(serve_app(b.app))


def test_answer_usage_cost_and_request_translation(serve_gateway, two_fakes) -> None:
    a, a_url, _b, b_url = two_fakes
    a.push(Reply(text="Rain on the roof", usage=(20, 10)))
    base = serve_gateway(config(a_url, b_url))
    body = {
        **ASK,
        "temperature": 0.3,
        "max_tokens": 64,
        "top_p": 0.9,
        "stop": "\n\n",
        "user": "u-1",
    }
    response = httpx.post(base + "/v1/chat", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["message"] == {"role": "assistant", "content": "Rain on the roof", "tool_calls": []}
    assert (data["target"], data["provider"], data["model"]) == ("smart", "primary", "gpt-4o")
    assert data["usage"] == {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30}
    # gpt-4o's bundled list price: $2.50 in, $10.00 out per million tokens.
    assert data["cost_usd"] == pytest.approx((20 * 2.5 + 10 * 10.0) / 1e6)
    assert data["finish_reason"] == "stop"
    assert data["id"].startswith("chat-")
    sent = a.bodies[0]
    assert sent["model"] == "gpt-4o"
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 64 and sent["top_p"] == 0.9
    assert sent["stop"] == ["\n\n"] and sent["user"] == "u-1"
    assert sent["messages"] == [{"role": "user", "content": "Write a haiku about rain"}]


def test_failover_on_429_moves_on_and_records_attempts(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(Fail(429, "slow down", type="rate_limit_error", headers={"retry-after": "0"}))
    b.push(Reply(text="from backup"))
    base = serve_gateway(config(a_url, b_url))
    data = httpx.post(base + "/v1/chat", json=ASK).json()
    assert data["message"]["content"] == "from backup"
    assert data["target"] == "cheap"
    (decision,) = data["decisions"]
    assert decision["policy"] == "failover" and decision["outcome"] == "cheap"
    assert decision["at"] == "routes.default.failover"
    attempts = decision["detail"]["attempts"]
    assert [(x["target"], x.get("error"), x.get("ok")) for x in attempts] == [
        ("smart", "rate_limited", None),
        ("cheap", None, True),
    ]
    # Failed attempts are not billed: usage is the backup's alone.
    assert data["usage"]["total_tokens"] == 18


def test_retry_after_is_honoured_before_retrying_same_target(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(Fail(429, "slow down", headers={"retry-after": "1"}), Reply(text="second try"))
    base = serve_gateway(config(a_url, b_url, retries=1))
    data = httpx.post(base + "/v1/chat", json=ASK).json()
    assert data["message"]["content"] == "second try"
    assert len(a.log) == 2 and not b.log
    waited = a.log[1].started - a.log[0].ended
    assert 0.9 <= waited < 2.0


def test_500_is_retried_then_fails_over(serve_gateway, two_fakes) -> None:
    a, a_url, _b, b_url = two_fakes
    a.push(Fail(500, "boom"), Fail(503, "still down", type="server_error"))
    base = serve_gateway(config(a_url, b_url, retries=1))
    data = httpx.post(base + "/v1/chat", json=ASK).json()
    assert data["target"] == "cheap"
    attempts = data["decisions"][0]["detail"]["attempts"]
    assert [(x["target"], x.get("status")) for x in attempts] == [
        ("smart", 500),
        ("smart", 503),
        ("cheap", None),
    ]


def test_slow_upstream_times_out_and_fails_over(serve_gateway, two_fakes) -> None:
    a, a_url, _b, b_url = two_fakes
    a.push(Hang(5))
    base = serve_gateway(config(a_url, b_url, timeout_s=0.5, retries=2))
    started = time.monotonic()
    data = httpx.post(base + "/v1/chat", json=ASK, timeout=10).json()
    assert time.monotonic() - started < 2.5
    assert data["target"] == "cheap"
    # The silent target is not asked twice, whatever the retry budget.
    assert len(a.log) == 1
    assert data["decisions"][0]["detail"]["attempts"][0]["error"] == "timeout"


def test_every_target_failing_is_502_with_attempts(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(Fail(500, "down"))
    b.push(Fail(502, "also down"))
    base = serve_gateway(config(a_url, b_url))
    response = httpx.post(base + "/v1/chat", json=ASK)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_error"
    assert [x["target"] for x in error["details"]["attempts"]] == ["smart", "cheap"]
    assert "sk-" not in response.text


def test_single_target_timeout_is_504(serve_gateway, two_fakes) -> None:
    a, a_url, _b, b_url = two_fakes
    a.push(Hang(5))
    base = serve_gateway(config(a_url, b_url, timeout_s=0.3))
    response = httpx.post(base + "/v1/chat", json={**ASK, "route": "single"}, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"


def test_all_rate_limited_is_429_with_retry_after(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(Fail(429, "limit", headers={"retry-after": "0"}))
    b.push(Fail(429, "limit", headers={"retry-after": "7"}))
    base = serve_gateway(config(a_url, b_url))
    response = httpx.post(base + "/v1/chat", json=ASK)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limited"


def test_provider_auth_failure_never_echoes_the_key(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(Fail(401, "Incorrect API key provided: sk-primary-secret", type="invalid_request_error"))
    b.push(Fail(401, "Incorrect API key provided: sk-backup-secret"))
    base = serve_gateway(config(a_url, b_url))
    response = httpx.post(base + "/v1/chat", json=ASK)
    assert response.status_code == 502
    assert "secret" not in response.text
    assert {x["error"] for x in response.json()["error"]["details"]["attempts"]} == {
        "authentication"
    }


def test_context_length_and_content_filter_are_the_callers_400(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(
        Fail(
            400,
            "This model's maximum context length is 128000 tokens",
            code="context_length_exceeded",
            type="invalid_request_error",
        )
    )
    b.push(
        Fail(
            400,
            "This model's maximum context length is 16000 tokens",
            code="context_length_exceeded",
            type="invalid_request_error",
        )
    )
    base = serve_gateway(config(a_url, b_url))
    response = httpx.post(base + "/v1/chat", json=ASK)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert len(b.log) == 1  # context length moves on: another model may hold it

    a.push(Fail(400, "flagged by the content filter", code="content_filter"))
    response = httpx.post(base + "/v1/chat", json=ASK)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_filtered"
    assert len(b.log) == 1  # a content filter is not failed over


def test_native_stream_with_failover_before_first_delta(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(Fail(503, "unavailable"))
    b.push(Stream(chunks=["Rain ", "falls."], usage=(9, 2)))
    base = serve_gateway(config(a_url, b_url))
    response = httpx.post(base + "/v1/chat", json={**ASK, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-router-provider"] == "backup"
    events = sse_events(response)
    assert [e["type"] for e in events] == ["delta", "delta", "end"]
    assert "".join(e["text"] for e in events[:-1]) == "Rain falls."
    end = events[-1]
    assert end["target"] == "cheap" and end["finish_reason"] == "stop"
    assert end["usage"] == {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}
    attempts = end["decisions"][0]["detail"]["attempts"]
    assert [x.get("error") for x in attempts] == ["server_error", None]
    assert b.bodies[0]["stream"] is True


@pytest.mark.parametrize("done_after", [0.0, 0.03])
def test_streams_read_to_done_keep_their_upstream_connection(
    serve_gateway, two_fakes, done_after: float
) -> None:
    """A stream closed before its `[DONE]` loses its connection: the next call opens another
    (with a real provider, a new TLS handshake). The terminator is read even when it comes a
    moment after the usage chunk, and the caller still gets the whole answer."""
    a, a_url, _, b_url = two_fakes
    a.push(*[Stream(chunks=["Rain."], usage=(4, 1), done_after=done_after)] * 3)
    base = serve_gateway(config(a_url, b_url))
    for _ in range(3):
        events = sse_events(httpx.post(base + "/v1/chat", json={**ASK, "stream": True}))
        assert [e["type"] for e in events] == ["delta", "end"]
        assert events[-1]["usage"]["total_tokens"] == 5
    clients = {seen.request.scope["client"] for seen in a.settled() if seen.request}
    assert len(a.log) == 3 and len(clients) == 1


def test_native_stream_failure_after_first_delta_ends_with_error(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    a.push(
        Stream(chunks=["one ", "two ", "three"], between=0.05, cut_after=2, done=False, finish=None)
    )
    base = serve_gateway(config(a_url, b_url))
    events = sse_events(httpx.post(base + "/v1/chat", json={**ASK, "stream": True}))
    assert [e["type"] for e in events[:2]] == ["delta", "delta"]
    assert events[-1]["type"] in ("end", "error")
    # The cut upstream is never passed off as a finished answer, nor restarted on the backup.
    assert events[-1].get("truncated") is True or events[-1]["type"] == "error"
    assert not b.log


def test_stream_tool_call_fragments_are_assembled(serve_gateway, two_fakes) -> None:
    a, a_url, _b, b_url = two_fakes
    a.push(
        Stream(
            chunks=[],
            tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}],
            finish="tool_calls",
        )
    )
    base = serve_gateway(config(a_url, b_url))
    events = sse_events(httpx.post(base + "/v1/chat", json={**ASK, "stream": True}))
    calls = [e for e in events if e["type"] == "tool_call"]
    assert calls == [
        {
            "type": "tool_call",
            "index": 0,
            "id": "call_0",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        }
    ]
    assert events[-1]["finish_reason"] == "tool_calls"


def test_dry_run_calls_nothing(serve_gateway, two_fakes) -> None:
    a, a_url, b, b_url = two_fakes
    base = serve_gateway(config(a_url, b_url))
    data = httpx.post(base + "/v1/chat", json={**ASK, "dry_run": True}).json()
    assert data["dry_run"] is True and data["target"] == "smart" and data["message"] is None
    assert data["decisions"][0]["outcome"] == "smart"
    assert not a.log and not b.log


def _parse(data: dict):
    from openai.types.chat import ChatCompletion

    from providers.openai import OpenAIConfig, OpenAIProvider

    provider = OpenAIProvider("p", OpenAIConfig(type="openai", api_key="k"))
    return provider.client._process_response_data(data=data, cast_to=ChatCompletion, response=None)


COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": "1700000000",
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    "system_fingerprint_extra": "kept",
}


def test_client_parses_responses_by_validation_when_the_data_fits() -> None:
    parsed = _parse(COMPLETION)
    # Validated, not merely constructed: the numeric string became the declared int.
    assert parsed.created == 1700000000
    assert parsed.usage.total_tokens == 4 and parsed.choices[0].message.content == "Hi"
    assert parsed.model_extra == {"system_fingerprint_extra": "kept"}


def test_client_parsing_stays_lenient_for_loosely_compatible_servers() -> None:
    odd = {**COMPLETION, "object": "text_completion", "choices": [{"text": "Hi"}]}
    parsed = _parse(odd)  # the SDK's own construct path: no error, values as sent
    assert parsed.object == "text_completion"
    assert parsed.created == "1700000000"


def test_url_merging_is_remembered_per_path_and_follows_a_new_base_url() -> None:
    from providers.openai import OpenAIConfig, OpenAIProvider

    provider = OpenAIProvider(
        "p", OpenAIConfig(type="openai", api_key="k", base_url="http://127.0.0.1:9/v1")
    )
    client = provider.client
    first = client._prepare_url("/chat/completions")
    assert str(first) == "http://127.0.0.1:9/v1/chat/completions"
    assert client._prepare_url("/chat/completions") is first  # parsed once
    assert str(client._prepare_url("models")) == "http://127.0.0.1:9/v1/models"
    client.base_url = "http://127.0.0.1:10/v2"
    assert (
        str(client._prepare_url("/chat/completions")) == "http://127.0.0.1:10/v2/chat/completions"
    )
    request = client._client.build_request("POST", "http://127.0.0.1:10/v2/chat/completions")
    again = client._client.build_request("POST", "http://127.0.0.1:10/v2/chat/completions")
    assert request.url == again.url == "http://127.0.0.1:10/v2/chat/completions"
