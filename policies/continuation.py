"""Mid-stream continuation: a failover stream that fails after text reached the caller goes on.

Once a delta has reached the caller a stream can no longer restart: the caller would get a second
answer appended to half of the first. What it can do is ask another target to *continue*: the
conversation plus an assistant message holding the text already delivered (an assistant prefill;
Anthropic continues one natively, many OpenAI-compatible servers do too). Only chain targets after
the failed one whose model alias declares `supports_prefill: true` are asked, in order, skipping
open breakers; their deltas are spliced into the same stream.

The stream fails over this way on a cut (an error mid-body, or a body that ends without its
finish), a stall past the idle timeout, or an error event. When no capable target remains, or
every one fails, the stream ends with the *original* failure: a later one (a prefill rejected,
say) never masks it. A stream that has sent a tool call is not continued (a prefill is text).

Billing: the caller pays for what it received. The combined usage is the continuation's own
(its input holds the conversation and the delivered text) plus, for each failed segment, the
output tokens of the text it delivered (estimated, unless the upstream reported its usage), at
that target's price. A failed segment's prompt is not billed again.

Every hop is one entry of a `continuation` decision: which target failed, how, after how many
characters, and which target took over (or that none could).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.chat import (
    ChatRequest,
    Message,
    StreamEvent,
    StreamFinish,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from app.errors import ErrorKind, ProviderError
from app.routing import Answer, Call, Node, Target
from providers.base import estimate_tokens


@dataclass
class Chain:
    """What continuation needs of the failover policy it serves."""

    nodes: list[Node]
    path: str
    allowed: Callable[[int], Awaitable[bool]]  # the breaker lets a call through
    verdict: Callable[[int, ProviderError | None], Awaitable[None]]  # tell the breaker


@dataclass
class _Spent:
    """The usage and cost of the segments that failed, billed for the text they delivered."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0

    def add(self, node: Node, text: str, finish: StreamFinish | None) -> None:
        if finish is not None and not finish.usage.estimated:
            output, estimated = finish.usage.output_tokens, False
        else:
            output, estimated = estimate_tokens(text), True
        self.usage = self.usage + Usage.of(0, output, estimated=estimated)
        if isinstance(node, Target):
            self.cost_usd += node.model.cost_usd(0, output)


def can_continue(node: Node) -> bool:
    return isinstance(node, Target) and node.model.supports_prefill


def prefilled(request: ChatRequest, delivered: str) -> ChatRequest:
    """The request again, ending in an assistant message that holds the delivered text (joined
    to the caller's own prefill, when the request already ends in one). Nothing delivered:
    the request as it was (a restart is then no repetition)."""
    if not delivered:
        return request
    messages = list(request.messages)
    last = messages[-1]
    if last.role == "assistant" and not last.tool_calls:
        messages[-1] = last.model_copy(update={"content": (last.content or "") + delivered})
    else:
        messages.append(Message(role="assistant", content=delivered))
    return request.model_copy(update={"messages": messages})


async def spliced(
    chain: Chain, call: Call, index: int, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    """The stream of `chain.nodes[index]`, continued on the next capable target when it fails."""
    if not any(can_continue(node) for node in chain.nodes[index + 1 :]):
        # Nothing could take over: the stream as it comes, failures and truncation included.
        try:
            async for event in events:
                yield event
        except ProviderError as error:
            await chain.verdict(index, error)
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        return

    delivered = ""  # every delta that reached the caller, across segments
    segment = ""  # what the current target delivered
    tool_sent = False
    hops: list[dict[str, Any]] = []
    spent = _Spent()
    original: ProviderError | None = None
    while True:
        finish: StreamFinish | None = None
        failure: ProviderError | None = None
        try:
            async for event in events:
                if isinstance(event, StreamFinish):
                    finish = event
                    break
                if isinstance(event, TextDelta):
                    delivered += event.text
                    segment += event.text
                elif isinstance(event, ToolCallDelta):
                    tool_sent = True
                yield event
        except ProviderError as error:
            failure = error
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        if (
            failure is None
            and finish is not None
            and finish.truncated
            and segment
            and not tool_sent
        ):
            failure = ProviderError(
                ErrorKind.SERVER_ERROR,
                "the provider's stream ended before its finish",
                provider=_provider(chain.nodes[index]),
                model=finish.model,
            )
            _fail_last_attempt(call, chain.nodes[index], failure)
            call.answer = None  # it did not answer: the continuing model is named from here
        if failure is None:
            if finish is None:
                return
            await chain.verdict(index, None)
            if hops:
                finish = _combined(call, finish, spent)
                _decide(call, chain, hops, chain.nodes[index].label)
            yield finish
            return
        await chain.verdict(index, failure)
        original = original or failure
        hop: dict[str, Any] = {
            "target": chain.nodes[index].label,
            "error": failure.kind.value,
            "message": failure.message,
            "delivered_chars": len(segment),
        }
        hops.append(hop)
        spent.add(chain.nodes[index], segment, finish)
        if tool_sent:
            hop["continued_by"] = None
            _decide(call, chain, hops, "failed", reason="a tool call was sent: text only continues")
            raise original
        opened = await _continue(chain, call, index, delivered, hops)
        if opened is None:
            _decide(call, chain, hops, "failed")
            raise original
        index, events = opened
        events = _without_repeated_space(events, delivered)
        segment = ""


async def _continue(
    chain: Chain, call: Call, failed: int, delivered: str, hops: list[dict[str, Any]]
) -> tuple[int, AsyncIterator[StreamEvent]] | None:
    """Open a continuation on the first capable target after `failed` that starts streaming."""
    failure = hops[-1]
    failure["continued_by"] = None
    for index in range(failed + 1, len(chain.nodes)):
        node = chain.nodes[index]
        if not can_continue(node):
            continue
        if not await chain.allowed(index):
            hops.append({"target": node.label, "skipped": "circuit_open"})
            continue
        request = call.request
        call.request = prefilled(request, delivered)
        events = node.stream(call)
        try:
            first = await anext(events)
        except (ProviderError, StopAsyncIteration) as exc:
            await events.aclose()  # type: ignore[attr-defined]
            error = (
                exc
                if isinstance(exc, ProviderError)
                else ProviderError(ErrorKind.SERVER_ERROR, "the continuation sent nothing")
            )
            await chain.verdict(index, error)
            hops.append(
                {
                    "target": node.label,
                    "error": error.kind.value,
                    "message": error.message,
                    "delivered_chars": 0,
                }
            )
            continue
        finally:
            call.request = request
        failure["continued_by"] = node.label
        if isinstance(node, Target):
            call.serving = node  # the model that answers from here on, in every chunk
        return index, prepend(first, events)
    return None


async def prepend(
    first: StreamEvent, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    """The continuation's events, its first included (the upstream call has its request)."""
    try:
        yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _without_repeated_space(
    events: AsyncIterator[StreamEvent], delivered: str
) -> AsyncIterator[StreamEvent]:
    """A continuation that starts with whitespace the delivered text already ends in (a prefill
    trimmed for the API, as Anthropic requires) has that whitespace dropped, once."""
    owed = len(delivered) - len(delivered.rstrip())
    try:
        async for event in events:
            if owed and isinstance(event, TextDelta):
                dropped = min(owed, len(event.text) - len(event.text.lstrip()))
                kept = event.text[dropped:]
                owed = owed - dropped if not kept else 0
                if not kept:
                    continue
                event = TextDelta(text=kept)
            elif not isinstance(event, TextDelta):
                owed = 0
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _combined(call: Call, finish: StreamFinish, spent: _Spent) -> StreamFinish:
    """The final event: the continuation's usage plus what the failed segments delivered."""
    usage = finish.usage + spent.usage
    answer = call.answer
    if answer is not None:
        call.answer = Answer(answer.target, answer.model, usage, answer.cost_usd + spent.cost_usd)
    return finish.model_copy(update={"usage": usage})


def _decide(
    call: Call, chain: Chain, hops: list[dict[str, Any]], outcome: str, **extra: Any
) -> None:
    # Its own place under the policy: the failover span keeps the failover decision.
    call.decide("continuation", f"{chain.path}.continuation", outcome, hops=hops, **extra)


def _fail_last_attempt(call: Call, node: Node, error: ProviderError) -> None:
    """The attempt recorded as a success at its first event ended without its finish."""
    for attempt in reversed(call.attempts):
        if attempt.target == node.label:
            attempt.ok = False
            attempt.error = error.kind.value
            attempt.message = error.message
            return


def _provider(node: Node) -> str | None:
    return node.provider.name if isinstance(node, Target) else None
