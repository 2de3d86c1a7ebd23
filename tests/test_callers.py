"""Caller keys, per-key rate limits and budgets, the admin key, and provider bulkheads."""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.callers import Callers
from app.config import ServerConfig, parse_config
from providers.base import estimate_input_tokens
from tests.conftest import sse_events

ASK = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}


def _prompt_tokens() -> int:
    from app.chat import ChatRequest

    return estimate_input_tokens(ChatRequest.model_validate(ASK).messages)


def config(keys: str, *, sim: str = "{type: simulated}", extra: str = "") -> str:
    # input_price chosen so that one ASK costs exactly $0.01 (the simulated provider reports the
    # same prompt token count the gateway estimates); output is free.
    price = 0.01 / _prompt_tokens() * 1_000_000
    return f"""
server:
  admin_key: admin-secret
{keys}
providers:
  sim: {sim}
models:
  m: {{provider: sim, model: sim-1, input_price: {price}, output_price: 0}}
routes:
  default: m
{extra}
"""


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_callers_identify_by_key_and_know_only_hashes() -> None:
    server = ServerConfig.model_validate(
        {
            "api_keys": ["plain", ""],
            "keys": [{"key": "k-a", "name": "team-a", "rpm": 5}, {"key": "", "name": "off"}],
            "admin_key": "adm",
        }
    )
    callers = Callers(server)
    team_a = callers.identify("k-a")
    assert team_a is not None and team_a.name == "team-a" and team_a.rpm == 5
    assert team_a.id == hashlib.sha256(b"k-a").hexdigest()[:32]
    assert callers.identify("plain") is not None and not callers.identify("plain").limited
    assert callers.identify("") is None and callers.identify("k-") is None
    assert callers.is_admin("adm") and not callers.is_admin("k-a")
    assert "k-a" not in repr(team_a)


def test_admin_key_must_differ_and_names_be_unique() -> None:
    from app.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config(
            "server:\n  admin_key: same\n  keys:\n    - {key: same, name: a}\n"
            "    - {key: other, name: a}\n"
        )
    text = str(caught.value)
    assert "server.admin_key (line 2): the admin key must differ from caller keys" in text
    assert "server.keys.1.name (line 5): 'a' is named twice" in text


def test_requests_per_minute_answer_429_with_retry_after(serve_gateway) -> None:
    base = serve_gateway(
        config("  keys:\n    - {key: k-a, name: team-a, rpm: 3}\n  api_keys: [free]")
    )
    codes = [httpx.post(base + "/v1/chat", json=ASK, headers=auth("k-a")) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    refused = codes[3]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limited"
    assert refused.json()["error"]["code"] == "requests_per_minute"
    # A key without limits, and the OpenAI dialect for the limited key, share nothing / the count.
    assert httpx.post(base + "/v1/chat", json=ASK, headers=auth("free")).status_code == 200
    openai_style = httpx.post(
        base + "/v1/chat/completions", json={"model": "default", **ASK}, headers=auth("k-a")
    )
    assert openai_style.status_code == 429
    assert httpx.post(base + "/v1/chat", json=ASK, headers=auth("nope")).status_code == 401


def test_tokens_per_minute_count_real_usage(serve_gateway) -> None:
    # Each answer uses the prompt plus 24 simulated words: the second request no longer fits.
    tokens = _prompt_tokens()
    base = serve_gateway(config(f"  keys:\n    - {{key: k, name: t, tpm: {tokens * 2 + 5}}}"))
    first = httpx.post(base + "/v1/chat", json=ASK, headers=auth("k"))
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] > tokens + 5
    second = httpx.post(base + "/v1/chat", json=ASK, headers=auth("k"))
    assert second.status_code == 429 and second.json()["error"]["code"] == "tokens_per_minute"


def test_budget_is_reserved_then_reconciled_and_answers_402(serve_gateway) -> None:
    base = serve_gateway(config("  keys:\n    - {key: k, name: team-b, budget_usd_per_day: 0.035}"))
    answers = [httpx.post(base + "/v1/chat", json=ASK, headers=auth("k")) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 402]
    assert answers[0].json()["cost_usd"] == pytest.approx(0.01)
    error = answers[3].json()["error"]
    assert error["type"] == "budget_exceeded"
    assert error["details"]["spent_usd"] == pytest.approx(0.03)
    assert error["details"]["budget_usd_per_day"] == 0.035


def test_budget_reservation_counts_max_tokens_until_the_real_cost_is_known(
    serve_gateway,
) -> None:
    # Output priced at $1000/M: reserving 100 output tokens is $0.1, past the $0.05 budget,
    # although the answer itself would cost less. With max_tokens 10 it fits.
    keys = "  keys:\n    - {key: k, name: c, budget_usd_per_day: 0.05}"
    text = config(keys).replace("output_price: 0", "output_price: 1000")
    base = serve_gateway(text)
    big = httpx.post(base + "/v1/chat", json={**ASK, "max_tokens": 100}, headers=auth("k"))
    assert big.status_code == 402
    assert big.json()["error"]["details"]["estimated_usd"] == pytest.approx(0.11, rel=0.01)
    small = httpx.post(base + "/v1/chat", json={**ASK, "max_tokens": 10}, headers=auth("k"))
    assert small.status_code == 200, small.text


def test_concurrent_requests_never_overspend(serve_gateway) -> None:
    sim = "{type: simulated, latency_ms: 100}"
    base = serve_gateway(
        config("  keys:\n    - {key: k, name: c, budget_usd_per_day: 0.045}", sim=sim)
    )
    with ThreadPoolExecutor(10) as pool:
        codes = list(
            pool.map(
                lambda _: httpx.post(base + "/v1/chat", json=ASK, headers=auth("k")).status_code,
                range(10),
            )
        )
    assert sorted(codes) == [200] * 4 + [402] * 6


def test_a_stream_settles_its_reservation_when_it_ends(serve_gateway) -> None:
    tokens = _prompt_tokens()
    base = serve_gateway(config(f"  keys:\n    - {{key: k, name: s, tpm: {tokens * 2 + 5}}}"))
    with httpx.stream(
        "POST", base + "/v1/chat", json={**ASK, "stream": True}, headers=auth("k")
    ) as response:
        response.read()
    assert sse_events(response)[-1]["type"] == "end"
    again = httpx.post(base + "/v1/chat", json=ASK, headers=auth("k"))
    assert again.status_code == 429  # the stream's real tokens were counted


def test_admin_endpoints_take_the_admin_key_only(serve_gateway) -> None:
    base = serve_gateway(config("  api_keys: [caller]"))
    assert httpx.post(base + "/admin/reload").status_code == 401
    refused = httpx.post(base + "/admin/reload", headers=auth("caller"))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_admin_key"
    # The admin key is no caller key either.
    assert httpx.post(base + "/v1/chat", json=ASK, headers=auth("admin-secret")).status_code == 401
    # Built from text, not a file: nothing to re-read, said as a config problem.
    answer = httpx.post(base + "/admin/reload", headers={"x-api-key": "admin-secret"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_config"


def test_without_an_admin_key_admin_is_closed_when_callers_need_keys(serve_gateway) -> None:
    base = serve_gateway(config("  api_keys: [caller]").replace("  admin_key: admin-secret\n", ""))
    refused = httpx.post(base + "/admin/reload", headers=auth("caller"))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_key_not_configured"


def test_bulkhead_bounds_concurrency_and_fails_over_when_full(serve_gateway) -> None:
    text = """
providers:
  slow: {type: simulated, latency_ms: 400, max_concurrency: 2, queue_timeout_s: 0.1}
  spare: {type: simulated}
models:
  s: {provider: slow, model: slow-1}
  p: {provider: spare, model: spare-1}
routes:
  default: {failover: [s, p]}
  only-slow: s
"""
    base = serve_gateway(text)
    with ThreadPoolExecutor(6) as pool:
        targets = list(
            pool.map(lambda _: httpx.post(base + "/v1/chat", json=ASK).json()["target"], range(6))
        )
    assert targets.count("s") == 2 and targets.count("p") == 4
    with ThreadPoolExecutor(3) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(base + "/v1/chat", json={**ASK, "route": "only-slow"}),
                range(3),
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 200, 429]
    full = next(a for a in answers if a.status_code == 429).json()["error"]
    assert "concurrency limit (2)" in str(full["details"]["attempts"])


async def test_bulkhead_holds_a_slot_for_a_whole_stream() -> None:
    from app.bulkhead import Bulkhead
    from app.chat import ChatRequest
    from providers.base import ModelConfig
    from providers.simulated import SimulatedConfig, SimulatedProvider

    inner = SimulatedProvider("sim", SimulatedConfig(chunk_delay_ms=50, words=4))
    bulkhead = Bulkhead(inner, 1, queue_timeout_s=0.05)
    model = ModelConfig(provider="sim", model="x")
    request = ChatRequest.model_validate(ASK)
    events = bulkhead.stream(model, request)
    await anext(events)
    started = time.monotonic()
    with pytest.raises(Exception, match="concurrency limit"):
        await bulkhead.complete(model, request)
    assert time.monotonic() - started < 1
    async for _ in events:
        pass
    await asyncio.wait_for(bulkhead.complete(model, request), 2)
