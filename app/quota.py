"""Per-caller rate limits and daily budgets: reserved before a call is dispatched, settled after.

Before any upstream call, a limited caller's request reserves, atomically in the state store:
one request against `rpm`, its estimated prompt tokens against `tpm` (both per minute, a fixed
window that starts at the window's first request), and its estimated cost against
`budget_usd_per_day` (per UTC day). The cost estimate is the dearest reachable target's price
for the prompt plus `max_tokens` (the request's, else the model's, else 1,024 output tokens).
After the call the reservation is replaced by what was really used, so replicas sharing one
Redis never together spend past a budget by more than one in-flight request's underestimate.
A refusal answers 429 (`Retry-After`: when the window resets) or 402.

The caller is bound to the request's context by authentication (`bind`), so every chat dialect
is covered by the two functions in `routers/common.py` that run a call.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.callers import Caller
from app.errors import BudgetExceeded, RateLimited
from app.routing import Call, Node
from app.state import StateStore
from providers.base import estimate_input_tokens

DEFAULT_OUTPUT_TOKENS = 1024
NANO = 1_000_000_000  # budgets are counted in nano-dollars: integers, exact in Redis
MINUTE = 60.0


@dataclass(frozen=True)
class Admission:
    caller: Caller
    store: StateStore


_admission: ContextVar[Admission | None] = ContextVar("llm_router_admission", default=None)


def bind(caller: Caller | None, store: StateStore) -> None:
    """Make `caller` the one whose limits apply to calls run in this request's context."""
    _admission.set(Admission(caller, store) if caller is not None and caller.limited else None)


@dataclass
class Lease:
    """What one request reserved; `settle` swaps the estimates for the real usage, once."""

    store: StateStore | None = None
    tokens_key: str | None = None
    tokens: int = 0
    budget_key: str | None = None
    cost_nano: int = 0
    reserved: list[tuple[str, int]] = field(default_factory=list)
    settled: bool = False

    async def refund(self) -> None:
        if self.store is not None:
            for key, amount in reversed(self.reserved):
                await self.store.adjust(key, -amount)
        self.reserved.clear()
        self.settled = True

    async def settle(self, call: Call) -> None:
        if self.settled or self.store is None:
            return
        self.settled = True
        answer = call.answer
        if self.tokens_key is not None:
            used = answer.usage.total_tokens if answer else 0
            await self.store.adjust(self.tokens_key, used - self.tokens)
        if self.budget_key is not None:
            spent = math.ceil(answer.cost_usd * NANO) if answer else 0
            await self.store.adjust(self.budget_key, spent - self.cost_nano)


def estimate_cost_usd(node: Node, call: Call, input_tokens: int) -> float:
    """The dearest reachable target's price for the prompt and the most output it may write."""
    worst = 0.0
    for target in node.targets():
        output = call.request.max_tokens or target.model.max_tokens or DEFAULT_OUTPUT_TOKENS
        worst = max(worst, target.model.cost_usd(input_tokens, output))
    return worst


def _seconds_to_utc_midnight(now: datetime) -> float:
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


async def admit(node: Node, call: Call) -> Lease:
    """Reserve the bound caller's share for this call, or raise 429/402. No caller: no limits."""
    admission = _admission.get()
    if admission is None:
        return Lease()
    caller, store = admission.caller, admission.store
    lease = Lease(store=store)
    try:
        if caller.rpm is not None:
            key = f"rpm:{caller.id}"
            got = await store.reserve(key, 1, caller.rpm, MINUTE)
            if not got.ok:
                raise RateLimited(
                    f"'{caller.name}' may send {caller.rpm} requests a minute",
                    code="requests_per_minute",
                    details={"limit": caller.rpm, "window_s": MINUTE},
                    retry_after=got.retry_after_s,
                )
            lease.reserved.append((key, 1))
        if call.dry_run:
            return lease
        tokens = estimate_input_tokens(call.request.messages, call.request.tools)
        if caller.tpm is not None:
            key = f"tpm:{caller.id}"
            got = await store.reserve(key, tokens, caller.tpm, MINUTE)
            if not got.ok:
                raise RateLimited(
                    f"'{caller.name}' may use {caller.tpm} tokens a minute",
                    code="tokens_per_minute",
                    details={"limit": caller.tpm, "used": got.used, "window_s": MINUTE},
                    retry_after=got.retry_after_s,
                )
            lease.reserved.append((key, tokens))
            lease.tokens_key, lease.tokens = key, tokens
        if caller.budget_usd_per_day is not None:
            now = datetime.now(UTC)
            key = f"budget:{caller.id}:{now.date().isoformat()}"
            cost = math.ceil(estimate_cost_usd(node, call, tokens) * NANO)
            limit = round(caller.budget_usd_per_day * NANO)
            got = await store.reserve(key, cost, limit, 2 * 86400.0)
            if not got.ok:
                raise BudgetExceeded(
                    f"'{caller.name}' has spent its daily budget of ${caller.budget_usd_per_day:g}",
                    code="budget_exceeded",
                    details={
                        "budget_usd_per_day": caller.budget_usd_per_day,
                        "spent_usd": got.used / NANO,
                        "estimated_usd": cost / NANO,
                        "resets_in_s": round(_seconds_to_utc_midnight(now)),
                    },
                )
            lease.reserved.append((key, cost))
            lease.budget_key, lease.cost_nano = key, cost
    except BaseException:
        await lease.refund()
        raise
    return lease
