"""Asking a model a short question about a request: the LLM classifier and the LLM scorer.

A `Judge` sends the policy's prompt (system) and the caller's text (user) to a model alias at
temperature 0, and returns the raw answer for the policy to parse. Answers are cached in memory
by a hash of what was sent, least recently used first out, up to `cache_size` entries. A judge
that fails (timeout, rate limit, …) never fails the request: the policy falls back and says so.
The judge is called in dry runs too (explain says so): its answer decides the path.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.chat import ChatRequest, Message
from app.errors import ProviderError
from app.routing import Call, Target


class JudgeConfig(BaseModel):
    """The fields `classifier:` and `scorer:` share."""

    model_config = ConfigDict(extra="forbid")

    model: str  # a model alias or provider/model-id
    prompt: str | None = None  # the system prompt; each policy has its default
    cache_size: int = Field(default=1024, ge=0)  # 0: no cache
    max_tokens: int = Field(default=16, ge=1, le=4096)


@dataclass(frozen=True)
class Verdict:
    raw: str | None  # the model's answer; None when the call failed
    cached: bool = False
    error: str | None = None  # the error kind when the call failed
    latency_ms: float = 0.0
    cost_usd: float = 0.0

    def detail(self) -> dict[str, Any]:
        """What a decision records about the judge call."""
        out: dict[str, Any] = {"model_called": not self.cached}
        if self.cached:
            out["cached"] = True
        if self.error is not None:
            out["error"] = self.error
        else:
            out["latency_ms"] = round(self.latency_ms, 1)
            out["cost_usd"] = round(self.cost_usd, 10)
        return out


class Judge:
    def __init__(self, target: Target, prompt: str, *, cache_size: int, max_tokens: int) -> None:
        self.target = target
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        self._cache: OrderedDict[str, str] = OrderedDict()

    def _key(self, text: str) -> str:
        sent = f"{self.target.name}\0{self.prompt}\0{text}".encode()
        return hashlib.sha256(sent).hexdigest()

    async def ask(self, call: Call, text: str) -> Verdict:
        key = self._key(text)
        if key in self._cache:
            self._cache.move_to_end(key)
            return Verdict(self._cache[key], cached=True)
        request = ChatRequest(
            messages=[
                Message(role="system", content=self.prompt),
                Message(role="user", content=text),
            ],
            temperature=0,
            max_tokens=self.max_tokens,
        )
        # A call of its own: the judge's attempts are not the answer's and are not billed to it.
        sub = Call(request, headers=call.headers, env=call.env, deadline=call.deadline)
        started = time.perf_counter()
        try:
            completion = await self.target.complete(sub)
        except ProviderError as error:
            return Verdict(None, error=error.kind.value, latency_ms=_ms(started))
        raw = completion.message.content or ""
        if self.cache_size:
            self._cache[key] = raw
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        cost = sub.answer.cost_usd if sub.answer else 0.0
        return Verdict(raw, latency_ms=_ms(started), cost_usd=cost)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
