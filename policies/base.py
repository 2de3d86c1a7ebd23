"""What a routing policy module provides, so the tree compiler can build it from YAML.

A policy module defines a pydantic `Config` for its YAML mapping (child nodes typed as
`NodeSpec`), and a `build(config, builder, loc)` that returns its `Node`, compiling each child
with `builder.node(spec, loc)`. It registers itself in `policies/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from app.routing import Node, Target
from app.state import StateStore

NodeSpec = str | dict[str, Any]
Loc = tuple[str | int, ...]  # where in the file: ("routes", "default", "failover", "chain", 0)

C = TypeVar("C", bound=BaseModel)


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Builder(Protocol):
    """What a policy's `build` may ask of the tree compiler."""

    state: StateStore  # shared state for breakers and the like (app/state.py)

    def node(self, spec: NodeSpec, loc: Loc) -> Node:
        """Compile a child node declared at `loc`."""
        ...

    def target(self, name: str, loc: Loc) -> Target:
        """Resolve a model alias or `provider/model-id` (for classifier or scorer models)."""
        ...

    def problem(self, loc: Loc, message: str) -> None:
        """Report a problem at `loc` without stopping the compile."""
        ...


@dataclass(frozen=True)
class Policy(Generic[C]):
    key: str  # the YAML key: classify, failover, …
    config: type[C]
    build: Callable[[C, Builder, Loc], Node]
    # Turns a YAML shorthand into the full mapping, e.g. `failover: [a, b]` → {chain: [a, b]}.
    normalize: Callable[[Any], Any] | None = None
