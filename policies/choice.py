"""The shape every choosing policy shares: decide which child serves, then delegate to it.

classify, cost_threshold, ab_split and match each implement `choose` (recording their decision
on the call); complete and stream then run the chosen child, so that any child may itself be a
policy and trees nest to any depth.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import AsyncIterator

from app.chat import Completion, StreamEvent
from app.routing import Call, Node


class Choice(Node):
    @abstractmethod
    async def choose(self, call: Call) -> Node:
        """The child that serves this call; records the decision with `call.decide`."""

    async def complete(self, call: Call) -> Completion:
        child = await self.choose(call)
        return await child.complete(call)

    async def stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        child = await self.choose(call)
        async with contextlib.aclosing(child.stream(call)) as events:  # type: ignore[type-var]
            async for event in events:
                yield event
