"""The span tree of a request, as a real OTLP/HTTP receiver gets it from the real exporter."""

from __future__ import annotations

import time

import httpx
import pytest

from app.config import ConfigError, parse_config
from app.factory import create_app
from tests.conftest import sse_events
from tests.fakes.openai_fake import Fail, OpenAIFake, Reply, Stream
from tests.fakes.server import serve_app
from tests.tracing_helpers import Traced, children, one

ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}
SERVER, INTERNAL = 2, 1  # OTLP span kinds
ERROR = 2  # OTLP status code


def config(primary: str, backup: str, family: str = "openinference") -> str:
    return f"""
providers:
  primary: {{type: openai, base_url: "{primary}/v1", api_key: sk-p, instrumentation: {family}}}
  backup: {{type: openai, base_url: "{backup}/v1", api_key: sk-b, instrumentation: {family}}}
  sim: {{type: simulated, chunk_delay_ms: 40, words: 50}}
models:
  smart: {{provider: primary, model: gpt-4o}}
  cheap: {{provider: backup, model: gpt-4o-mini}}
  slow: {{provider: sim, model: sim-1}}
routes:
  default:
    failover: {{chain: [smart, cheap], retries: 0}}
  single: smart
  slow-stream: slow
"""


@pytest.fixture
def fakes(stack) -> tuple[OpenAIFake, str, OpenAIFake, str]:
    a, b = OpenAIFake("primary"), OpenAIFake("backup")
    return a, stack.enter_context(serve_app(a.app)), b, stack.enter_context(serve_app(b.app))


def test_single_target_tree(traced, fakes) -> None:
    a, a_url, _b, b_url = fakes
    a.push(Reply(text="Rain on the roof", usage=(20, 10)))
    gw: Traced = traced(config(a_url, b_url))
    response = httpx.post(gw.url + "/v1/chat", json={**ASK, "route": "single", "user": "u-7"})
    assert response.status_code == 200, response.text
    trace_id = response.headers["x-trace-id"]
    assert response.json()["trace_id"] == trace_id

    spans = gw.spans(trace_id, 4)
    server = one(spans, "POST /v1/chat")
    assert server.parent_id is None and server.kind == SERVER
    assert server.attributes["http.response.status_code"] == 200
    (route,) = children(spans, server)
    assert route.name == "route single"
    assert route.attributes["router.route"] == "single"
    assert route.attributes["routing.decision"] == "smart"
    assert route.attributes["routing.model"] == "gpt-4o"
    assert route.attributes["routing.candidates"] == ["smart"]
    assert route.attributes["routing.reason"] == "direct"
    assert route.attributes["user.id"] == "u-7"
    assert route.attributes["cost.estimated_usd"] == pytest.approx((20 * 2.5 + 10 * 10) / 1e6)
    (attempt,) = children(spans, route)
    assert attempt.name == "attempt smart"
    assert attempt.attributes["provider.name"] == "primary"
    assert attempt.attributes["provider.model"] == "gpt-4o"
    assert attempt.attributes["attempt.number"] == 1
    assert attempt.attributes["provider.success"] is True
    assert attempt.attributes["cost.estimated_usd"] == route.attributes["cost.estimated_usd"]
    (llm,) = children(spans, attempt)
    assert llm.attributes["openinference.span.kind"] == "LLM"
    assert llm.attributes["llm.model_name"] == "gpt-4o"
    assert llm.attributes["llm.token_count.prompt"] == 20
    # Nothing else in the trace: no second span per SDK call, no stray roots.
    assert len(spans) == 4


def test_failover_tree_with_a_failed_attempt(traced, fakes) -> None:
    a, a_url, b, b_url = fakes
    a.push(Fail(500, "boom"))
    b.push(Reply(text="from backup"))
    gw: Traced = traced(config(a_url, b_url))
    response = httpx.post(gw.url + "/v1/chat", json=ASK)
    assert response.json()["target"] == "cheap"
    spans = gw.spans(response.headers["x-trace-id"], 7)

    route = one(spans, "route default")
    (policy,) = children(spans, route)
    assert policy.name == "policy failover"
    assert policy.attributes["router.policy"] == "failover"
    assert policy.attributes["router.outcome"] == "cheap"
    assert policy.attributes["router.path"] == "routes.default.failover"
    assert policy.attributes["router.candidates"] == ["smart", "cheap"]
    assert policy.attributes["resilience.max_retries"] == 0
    failed, succeeded = children(spans, policy)
    assert (failed.name, succeeded.name) == ("attempt smart", "attempt cheap")
    assert failed.status_code == ERROR
    assert failed.attributes["provider.success"] is False
    assert failed.attributes["provider.error"] == "server_error"
    assert failed.attributes["provider.status_code"] == 500
    assert (failed.attributes["routing.hop"], succeeded.attributes["routing.hop"]) == (1, 2)
    assert succeeded.attributes["provider.success"] is True
    assert succeeded.status_code != ERROR
    (failed_call,) = children(spans, failed)  # the SDK's span of the refused call
    assert failed_call.status_code == ERROR
    (llm,) = children(spans, succeeded)
    assert llm.attributes["llm.model_name"] == "gpt-4o-mini"
    assert route.attributes["routing.hops"] == 2
    assert route.attributes["routing.reason"] == "failover:cheap"


def test_every_target_failing_marks_route_and_policy_as_errors(traced, fakes) -> None:
    a, a_url, b, b_url = fakes
    a.push(Fail(500, "down"))
    b.push(Fail(502, "also down"))
    gw: Traced = traced(config(a_url, b_url))
    response = httpx.post(gw.url + "/v1/chat", json=ASK)
    assert response.status_code == 502
    spans = gw.spans(response.headers["x-trace-id"], 7)
    server = one(spans, "POST /v1/chat")
    assert server.attributes["http.response.status_code"] == 502
    assert server.status_code == ERROR
    for name in ("route default", "policy failover", "attempt smart", "attempt cheap"):
        assert one(spans, name).status_code == ERROR, name
    assert one(spans, "policy failover").attributes["router.outcome"] == "exhausted"
    assert one(spans, "route default").attributes["routing.decision"] == "none"


def test_stream_tree_ends_with_the_stream(traced, fakes) -> None:
    a, a_url, _b, b_url = fakes
    a.push(Stream(chunks=["Rain ", "falls"], usage=(9, 2)))
    gw: Traced = traced(config(a_url, b_url))
    response = httpx.post(gw.url + "/v1/chat", json={**ASK, "stream": True})
    events = sse_events(response)
    assert events[-1]["type"] == "end"
    trace_id = response.headers["x-trace-id"]
    assert events[-1]["trace_id"] == trace_id
    spans = gw.spans(trace_id, 5)
    server = one(spans, "POST /v1/chat")
    route = one(spans, "route default")
    policy = one(spans, "policy failover")
    attempt = one(spans, "attempt smart")
    (llm,) = children(spans, attempt)
    assert route.parent_id == server.span_id and policy.parent_id == route.span_id
    assert attempt.parent_id == policy.span_id
    assert route.attributes["router.stream"] is True
    assert attempt.attributes["router.usage.output_tokens"] == 2
    assert llm.attributes["llm.token_count.completion"] == 2
    # Each span ends after what it contains.
    assert server.end_ns >= route.end_ns >= policy.end_ns >= attempt.end_ns >= llm.end_ns


def test_stream_spans_end_when_the_caller_disconnects(traced, fakes) -> None:
    _a, a_url, _b, b_url = fakes
    gw: Traced = traced(config(a_url, b_url))
    body = {**ASK, "stream": True, "route": "slow-stream"}
    started = time.monotonic()
    with (
        httpx.Client(timeout=5) as client,
        client.stream("POST", gw.url + "/v1/chat", json=body) as response,
    ):
        trace_id = response.headers["x-trace-id"]
        next(response.iter_lines())  # one event, then hang up (50 words at 40 ms would be 2 s)
    spans = gw.spans(trace_id, 3)
    assert time.monotonic() - started < 1.5
    route = one(spans, "route slow-stream")
    attempt = one(spans, "attempt slow")
    assert route.attributes["router.cancelled"] is True
    assert attempt.attributes["provider.error"] == "cancelled"
    # The uninstrumented simulated provider: the attempt itself is the model event.
    assert attempt.attributes["honeyhive_event_type"] == "model"
    assert attempt.attributes["llm.model_name"] == "sim-1"


def test_incoming_traceparent_is_honoured(traced, fakes) -> None:
    _a, a_url, _b, b_url = fakes
    gw: Traced = traced(config(a_url, b_url))
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = httpx.post(
        gw.url + "/v1/chat/completions",
        json={**ASK, "model": "single"},
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == trace_id
    spans = gw.spans(trace_id, 4)
    assert one(spans, "POST /v1/chat/completions").parent_id == parent


def test_errors_before_routing_carry_a_trace_id(traced, fakes) -> None:
    _a, a_url, _b, b_url = fakes
    gw: Traced = traced(config(a_url, b_url))
    response = httpx.post(gw.url + "/v1/chat", json={**ASK, "route": "nope"})
    assert response.status_code == 404
    spans = gw.spans(response.headers["x-trace-id"], 1)
    assert one(spans, "POST /v1/chat").attributes["http.response.status_code"] == 404


@pytest.mark.parametrize("family", ["openinference", "traceloop"])
def test_capture_content_false_leaves_no_prompt_text(traced, fakes, family) -> None:
    a, a_url, _b, b_url = fakes
    secret = "zebra-umbrella-7731"
    a.push(Reply(text=f"answer about {secret}"), Stream(chunks=[f"more {secret}"]))
    gw: Traced = traced(
        config(a_url, b_url, family),
        tracing='{exporter: otlp, endpoint: "{collector}/v1/traces", capture_content: false}',
    )
    ask = {"messages": [{"role": "user", "content": f"Tell me about {secret}"}], "route": "single"}
    first = httpx.post(gw.url + "/v1/chat", json=ask)
    second = httpx.post(gw.url + "/v1/chat", json={**ask, "stream": True})
    spans = gw.spans(first.headers["x-trace-id"], 4) + gw.spans(second.headers["x-trace-id"], 4)
    llm_spans = [s for s in spans if s.attributes.get("honeyhive_event_type") == "model"]
    assert len(llm_spans) == 2
    for span in spans:
        assert secret not in repr(span.attributes), (span.name, span.attributes)


def test_capture_content_true_does_record_the_prompt(traced, fakes) -> None:
    # The other side of the test above: the check can fail.
    _a, a_url, _b, b_url = fakes
    gw: Traced = traced(config(a_url, b_url))
    ask = {"messages": [{"role": "user", "content": "Tell me about zebras"}], "route": "single"}
    response = httpx.post(gw.url + "/v1/chat", json=ask)
    spans = gw.spans(response.headers["x-trace-id"], 4)
    assert any("zebras" in repr(s.attributes) for s in spans)


def test_one_sdk_with_two_instrumentor_families_is_refused(fakes) -> None:
    _a, a_url, _b, b_url = fakes
    text = config(a_url, b_url).replace(
        "api_key: sk-b, instrumentation: openinference", "api_key: sk-b, instrumentation: traceloop"
    )
    with pytest.raises(ConfigError) as caught:
        create_app(parse_config("tracing: {exporter: console}\n" + text, env={}))
    message = str(caught.value)
    assert "providers.backup.instrumentation" in message and "same openai SDK" in message


NESTED = """
providers:
  sim: {type: simulated}
models:
  fast: {provider: sim, model: sim-fast, input_price: 0.1, output_price: 0.4}
  smart: {provider: sim, model: sim-smart, input_price: 3, output_price: 12}
routes:
  default:
    classify:
      rules: {creative: [haiku, poem]}
      branches:
        creative:
          cost_threshold:
            scorer: heuristic
            threshold: 0.99
            below:
              ab_split:
                sticky: user
                variants: {A: {weight: 30, to: fast}, B: {weight: 70, to: smart}}
            above: smart
      otherwise:
        match:
          - when: {metadata.tier: premium}
            to: smart
          - to: fast
"""


def test_each_policy_span_carries_its_own_attributes(traced) -> None:
    gw: Traced = traced(NESTED)
    response = httpx.post(gw.url + "/v1/chat", json={**ASK, "user": "u-1"})
    assert response.status_code == 200, response.text
    spans = gw.spans(response.headers["x-trace-id"], 6)
    classify = one(spans, "policy classify")
    assert classify.attributes["router.policy"] == "classify"
    assert classify.attributes["classification.result"] == "creative"
    assert classify.attributes["classification.method"] == "rules"
    (cost,) = children(spans, classify)
    assert cost.name == "policy cost_threshold"
    assert 0 <= cost.attributes["query.complexity_score"] <= 1
    assert cost.attributes["routing.threshold"] == 0.99
    assert cost.attributes["router.outcome"] == "below"
    (split,) = children(spans, cost)
    assert split.name == "policy ab_split"
    assert split.attributes["ab_test.variant"] in ("A", "B")
    share = {"A": 0.3, "B": 0.7}[split.attributes["ab_test.variant"]]
    assert split.attributes["ab_test.split_ratio"] == pytest.approx(share)
    (attempt,) = children(spans, split)
    assert attempt.name.startswith("attempt ")

    response = httpx.post(
        gw.url + "/v1/chat",
        json={"messages": [{"role": "user", "content": "facts"}], "metadata": {"tier": "premium"}},
    )
    spans = gw.spans(response.headers["x-trace-id"], 5)
    match = one(spans, "policy match")
    assert match.attributes["match.rule"] == 0
    assert match.attributes["router.outcome"] == "smart"
    assert one(spans, "policy classify").attributes["classification.result"] == "otherwise"
