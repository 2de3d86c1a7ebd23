"""The chaos run: concurrent traffic through failover routes over three faulty upstreams.

Three provider fakes (OpenAI, a local OpenAI-compatible server, Anthropic), each behind a
`FaultInjector` (tests/fakes/faults.py) that fails a share of its calls, serve a gateway whose
routes fail over across all three with retries, backoff, Retry-After and a circuit breaker.
`run_chaos` sends N tagged requests (half of them streamed) with a fixed concurrency and checks
each answer against what the upstreams saw:

- answered, or refused with a typed error (429, 502, 504 or a stream's `error` event);
- never later than the request deadline (`server.request_timeout_s`) plus a small slack;
- the attempts the gateway reports (`decisions`, or `details.attempts`) are the upstream calls
  the fakes logged for that request: same number, same providers in the same order, and each
  attempt failed exactly when its upstream call was given a fault, of the matching class;
- billed once: the usage is the answering call's alone and the cost its price, and the cost
  the gateway counted in /metrics is the sum of the answered requests' costs.

Used by tests/test_chaos.py (a quick bounded run) and bench/chaos.py (the full 10,000).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import statistics
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.config import parse_config
from app.factory import create_app
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.faults import FaultInjector, Hit
from tests.fakes.local_server_fake import LocalServerFake
from tests.fakes.openai_fake import OpenAIFake, Reply, Stream
from tests.fakes.server import serve_app

DEADLINE_S = 4.0  # server.request_timeout_s
SLACK_S = 1.0  # scheduling on a busy machine; a hang is far beyond it
ATTEMPT_TIMEOUT_S = 1.0  # each model's timeout_s: a silent or stalled upstream costs this
# What each injected fault must read as in the gateway's account of the attempt.
FAULT_KIND = {
    "429_retry_after": "rate_limited",
    "429": "rate_limited",
    "500": "server_error",
    "503": "server_error",
    "reset": "server_error",
    "cut": "server_error",
    "silence": "timeout",
    "stall": "timeout",
}
TYPED_STATUSES = {429: "rate_limited", 502: "upstream_error", 504: "upstream_timeout"}
PRICES = {"gpt": (0.15, 0.60), "llama": (0.05, 0.10), "claude": (3.00, 15.00)}
PROVIDER_OF = {"gpt": "openai", "llama": "local", "claude": "anthropic"}

CONFIG = """
server: {{request_timeout_s: {deadline}}}
providers:
  openai: {{type: openai, base_url: "{openai}/v1", api_key: "{openai_key}"}}
  local: {{type: openai, base_url: "{local}/v1", api_key: ollama}}
  anthropic: {{type: anthropic, base_url: "{anthropic}", api_key: "{anthropic_key}"}}
models:
  gpt: {{provider: openai, model: gpt-4o-mini, input_price: 0.15, output_price: 0.60,
        timeout_s: {timeout}}}
  llama: {{provider: local, model: "llama3.2:3b", input_price: 0.05, output_price: 0.10,
          timeout_s: {timeout}}}
  claude: {{provider: anthropic, model: claude-sonnet-5, input_price: 3.0, output_price: 15.0,
           timeout_s: {timeout}}}
routes:
  default:
    failover:
      chain: [gpt, claude, llama]
      retries: 1
      backoff: {{initial_s: 0.01, max_s: 0.05}}
      max_retry_after_s: 0.5
      circuit_breaker: {{failures: 4, cooldown_s: 0.5}}
  reverse:
    failover:
      chain: [llama, gpt, claude]
      retries: 2
      backoff: {{initial_s: 0.01, max_s: 0.05}}
      max_retry_after_s: 0.5
"""


def _answering(fake: OpenAIFake) -> OpenAIFake:
    """Make `fake` answer streams with a stream and whole requests with a whole answer (its
    default is one answer for both) without touching its module."""

    async def respond(body: dict[str, Any], model: str, seen: Any, base=fake._respond) -> Any:
        fake.script.append(Stream() if body.get("stream") else Reply())
        return await base(body, model, seen)

    fake._respond = respond  # type: ignore[method-assign]
    fake.log = _Bounded()  # the fakes' own logs would grow for the whole run
    return fake


class _Bounded(list):
    """A request log that keeps only the latest entries (the injector keeps the full one)."""

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) > 64:
            del self[:32]


@dataclass
class Outcome:
    tag: str
    route: str
    stream: bool
    status: int
    latency_s: float
    answered: bool = False
    error_type: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    provider: str | None = None
    target: str | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float = 0.0
    problem: str | None = None  # set when the answer itself broke the contract
    texts: list[str] = field(default_factory=list)  # every byte the caller got, for scans


@dataclass
class Report:
    requests: int
    seconds: float
    answered: int
    typed_errors: Counter[str]
    faults: Counter[str]
    upstream_calls: int
    latencies: list[float]
    problems: list[str]
    metrics_cost: float
    answered_cost: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 1),
            "throughput_rps": round(self.throughput, 1),
            "answered": self.answered,
            "typed_errors": dict(self.typed_errors),
            "lost_or_hung": self.requests - self.answered - sum(self.typed_errors.values()),
            "upstream_calls": self.upstream_calls,
            "faults_injected": dict(self.faults),
            "fault_share": round(sum(self.faults.values()) / max(1, self.upstream_calls), 3),
            "latency_s": {
                "p50": round(statistics.median(self.latencies), 3) if self.latencies else 0,
                "p99": round(self.percentile(0.99), 3),
                "max": round(max(self.latencies, default=0), 3),
            },
            "cost_usd": {"answered": self.answered_cost, "metrics": self.metrics_cost},
            "problems": len(self.problems),
        }


class Chaos:
    """The upstreams, each behind its fault injector, and the gateway over them."""

    def __init__(self, stack: ExitStack, *, rate: float = 0.3, seed: int = 1, hold_s: float = 5):
        openai = _answering(OpenAIFake("openai"))
        local = _answering(LocalServerFake())
        anthropic = AnthropicFake(api_key=None)
        anthropic.requests = _Bounded()
        self.injectors = {
            name: FaultInjector(fake.app, name, rate=rate, seed=seed + i, hold_s=hold_s)
            for i, (name, fake) in enumerate(
                (("openai", openai), ("local", local), ("anthropic", anthropic))
            )
        }
        # Half the 429s with Retry-After say "now" (retry the same target), half "1" (over
        # the route's max_retry_after_s of 0.5: move on).
        self.injectors["local"].retry_after = "1"
        urls = {name: stack.enter_context(serve_app(inj)) for name, inj in self.injectors.items()}
        self.secrets = {
            "openai_key": "sk-chaos-canary-7f3e1d",
            "anthropic_key": "sk-ant-canary-92c4",
        }
        text = CONFIG.format(deadline=DEADLINE_S, timeout=ATTEMPT_TIMEOUT_S, **urls, **self.secrets)
        self.app = create_app(parse_config(text, env={}))
        self.base = stack.enter_context(serve_app(self.app))

    def hits(self) -> dict[str | None, list[Hit]]:
        merged: dict[str | None, list[Hit]] = {}
        for injector in self.injectors.values():
            for tag, hits in injector.by_tag().items():
                merged.setdefault(tag, []).extend(hits)
        for hits in merged.values():
            hits.sort(key=lambda h: h.started)
        return merged


async def _one(client: httpx.AsyncClient, n: int, stream: bool, route: str) -> Outcome:
    tag = f"chaos-{n}"
    body = {
        "route": route,
        "messages": [{"role": "user", "content": f"{tag}: write a haiku about rain"}],
        "stream": stream,
    }
    started = time.monotonic()
    outcome = Outcome(tag, route, stream, 0, 0.0)
    try:
        async with client.stream("POST", "/v1/chat", json=body) as response:
            outcome.status = response.status_code
            raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    except httpx.TimeoutException:
        outcome.problem = "hung: no answer within the client's timeout"
        outcome.latency_s = time.monotonic() - started
        return outcome
    except httpx.HTTPError as exc:
        outcome.problem = f"lost: the connection failed ({type(exc).__name__})"
        outcome.latency_s = time.monotonic() - started
        return outcome
    outcome.latency_s = time.monotonic() - started
    text = raw.decode()
    outcome.texts.append(text)
    if outcome.status == 200 and stream:
        _read_stream(outcome, text)
    elif outcome.status == 200:
        _read_answer(outcome, json.loads(text))
    else:
        _read_error(outcome, json.loads(text))
    return outcome


def _failover_attempts(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for decision in decisions:
        if decision["policy"] == "failover":
            return [a for a in decision["detail"]["attempts"] if "skipped" not in a]
    return []


def _read_answer(outcome: Outcome, body: dict[str, Any]) -> None:
    outcome.answered = True
    outcome.attempts = _failover_attempts(body["decisions"])
    outcome.provider, outcome.target = body["provider"], body["target"]
    outcome.usage, outcome.cost_usd = body["usage"], body["cost_usd"]


def _read_error(outcome: Outcome, body: dict[str, Any]) -> None:
    error = body.get("error", {})
    outcome.error_type = error.get("type")
    outcome.attempts = [
        a for a in error.get("details", {}).get("attempts", []) if "skipped" not in a
    ]
    if TYPED_STATUSES.get(outcome.status) != outcome.error_type:
        outcome.problem = f"untyped error: {outcome.status} {outcome.error_type}"


def _read_stream(outcome: Outcome, text: str) -> None:
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    final = [e for e in events if e["type"] in ("end", "error")]
    if len(final) != 1 or events[-1] is not final[0]:
        outcome.problem = (
            f"a stream must end with one end or error event: {[e['type'] for e in events]}"
        )
        return
    last = final[0]
    if last["type"] == "end":
        if last.get("truncated") or last.get("finish_reason") is None:
            outcome.problem = "a stream cut upstream was ended as an answer"
        _read_answer(outcome, last)
        return
    outcome.error_type = last["error"]["type"]
    outcome.attempts = [
        a for a in last["error"].get("details", {}).get("attempts", []) if "skipped" not in a
    ]
    if outcome.error_type not in TYPED_STATUSES.values():
        outcome.problem = f"untyped stream error: {outcome.error_type}"


def check(outcome: Outcome, hits: list[Hit]) -> list[str]:
    """What is wrong with one request's handling, judged against its upstream calls."""
    problems = [outcome.problem] if outcome.problem else []
    if outcome.latency_s > DEADLINE_S + SLACK_S:
        problems.append(f"took {outcome.latency_s:.2f}s, past the {DEADLINE_S}s deadline")
    seen = [h.provider for h in hits]
    told = [a["provider"] for a in outcome.attempts]
    if seen != told:
        problems.append(f"attempts {told} but the upstreams saw {seen}")
        return [f"{outcome.tag}: {p}" for p in problems]
    for hit, attempt in zip(hits, outcome.attempts, strict=True):
        if hit.fault is None and not attempt.get("ok"):
            problems.append(f"{hit.provider} answered but the attempt says {attempt.get('error')}")
        if hit.fault is not None and attempt.get("ok"):
            problems.append(f"{hit.provider} was given {hit.fault} but the attempt says ok")
        if hit.fault is not None and attempt.get("error") != FAULT_KIND[hit.fault]:
            problems.append(
                f"{hit.provider} was given {hit.fault}, the attempt says {attempt.get('error')}"
            )
    if outcome.answered:
        problems.extend(_billing(outcome, hits))
    return [f"{outcome.tag}: {p}" for p in problems]


def _billing(outcome: Outcome, hits: list[Hit]) -> list[str]:
    problems = []
    if not hits or hits[-1].fault is not None:
        return ["answered, yet the last upstream call failed"]
    if PROVIDER_OF.get(outcome.target or "") != hits[-1].provider:
        problems.append(f"answered by {outcome.target}, but {hits[-1].provider} answered last")
    usage = outcome.usage or {}
    price_in, price_out = PRICES[outcome.target or ""]
    expected = (usage["input_tokens"] * price_in + usage["output_tokens"] * price_out) / 1e6
    if not math.isclose(outcome.cost_usd, expected, rel_tol=1e-6, abs_tol=1e-12):
        problems.append(f"cost {outcome.cost_usd} is not the answering call's {expected}")
    if not usage.get("estimated"):
        # Every fake reports the same usage for every call: more means failures were billed.
        one_call = (11, 3) if outcome.stream and outcome.target == "gpt" else (11, 7)
        if (usage["input_tokens"], usage["output_tokens"]) != one_call:
            problems.append(f"usage {usage} is not one call's {one_call}")
    return problems


def metrics_cost(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"llm_router_cost_usd_total(\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if match:
            total += float(match.group(2))
    return total


async def drive(base: str, requests: int, concurrency: int) -> tuple[list[Outcome], float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(DEADLINE_S + 10)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                route = "reverse" if n % 3 == 2 else "default"
                outcomes.append(await _one(client, n, n % 2 == 1, route))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes, time.monotonic() - started


def run_chaos(requests: int, concurrency: int, *, rate: float = 0.3, seed: int = 1) -> Report:
    with ExitStack() as stack:
        chaos = Chaos(stack, rate=rate, seed=seed)
        outcomes, seconds = asyncio.run(drive(chaos.base, requests, concurrency))
        time.sleep(0.2)  # let the upstreams note the last hang-ups
        hits = chaos.hits()
        cost_text = httpx.get(chaos.base + "/metrics").text
    problems: list[str] = []
    for outcome in outcomes:
        problems.extend(check(outcome, hits.get(outcome.tag, [])))
    if len(outcomes) != requests:
        problems.append(f"{requests - len(outcomes)} requests never came back")
    answered_cost = sum(o.cost_usd for o in outcomes if o.answered)
    counted = metrics_cost(cost_text)
    if not math.isclose(answered_cost, counted, rel_tol=1e-6, abs_tol=1e-9):
        problems.append(f"/metrics counted ${counted}, the answers were billed ${answered_cost}")
    upstream = [h for tagged in hits.values() for h in tagged]
    return Report(
        requests=requests,
        seconds=seconds,
        answered=sum(o.answered for o in outcomes),
        typed_errors=Counter(o.error_type for o in outcomes if not o.answered and not o.problem),
        faults=Counter(h.fault for h in upstream if h.fault),
        upstream_calls=len(upstream),
        latencies=[o.latency_s for o in outcomes],
        problems=problems,
        metrics_cost=counted,
        answered_cost=answered_cost,
    )
