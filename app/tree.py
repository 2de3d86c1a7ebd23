"""Compile `routes:` into routing trees, once, at load.

Names are resolved here (route name, then model alias, then `provider/model-id`), every policy
mapping is validated by its own module, and references between routes that form a cycle are
refused. Problems are collected, not raised one at a time, so `llm-router validate` shows all.
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from app.config import ConfigError, Loc, Problem, RouterConfig, dotted, suggest
from app.hops import traced_policy
from app.routing import Node, RouteRef, Target
from app.state import MemoryStore, StateStore
from policies import POLICIES
from policies.base import NodeSpec
from providers import ModelConfig, Provider
from providers.prices import list_price


def priced(model: ModelConfig) -> ModelConfig:
    """The alias with the bundled list price filled in where the config gives none."""
    if model.input_price is not None and model.output_price is not None:
        return model
    price = list_price(model.model)
    if price is None:
        return model
    return model.model_copy(
        update={
            "input_price": model.input_price if model.input_price is not None else price[0],
            "output_price": model.output_price if model.output_price is not None else price[1],
        }
    )


class TreeCompiler:
    """Builds every route's tree against already-constructed providers."""

    def __init__(
        self,
        config: RouterConfig,
        providers: dict[str, Provider],
        state: StateStore | None = None,
    ) -> None:
        self.config = config
        self.providers = providers
        self.state: StateStore = state if state is not None else MemoryStore()
        self.problems: list[Problem] = []
        self.routes: dict[str, Node] = {}
        self._targets: dict[str, Target] = {}
        self._compiling: list[str] = []

    # -- Builder protocol (what policies call) ---------------------------------------------

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(self.config.problem(loc, message))

    def node(self, spec: NodeSpec, loc: Loc) -> Node:
        if isinstance(spec, str):
            return self._named(spec, loc)
        if isinstance(spec, dict):
            return self._policy(spec, loc)
        self.problem(loc, "a routing node is a name or a mapping with one policy key")
        return _Invalid(dotted(loc))

    def target(self, name: str, loc: Loc) -> Target:
        found = self.resolve_target(name)
        if found is None:
            self.problem(loc, self._unknown(name, routes=False))
            return _InvalidTarget(name)
        return found

    # -- compiling ---------------------------------------------------------------------------

    def compile(self) -> dict[str, Node]:
        for name in self.config.routes:
            self._route(name, ("routes", name))
        if self.problems:
            raise ConfigError(self.problems)
        return self.routes

    def _route(self, name: str, loc: Loc) -> Node:
        if name in self.routes:
            return self.routes[name]
        if name in self._compiling:
            cycle = " → ".join([*self._compiling[self._compiling.index(name) :], name])
            self.problem(loc, f"routes refer to each other in a cycle: {cycle}")
            return _Invalid(dotted(loc))
        self._compiling.append(name)
        try:
            root = self.node(self.config.routes[name], ("routes", name))
        finally:
            self._compiling.pop()
        self.routes[name] = root
        return root

    def _named(self, name: str, loc: Loc) -> Node:
        if name in self.config.routes:
            self._route(name, loc)
            return RouteRef(name, dotted(loc), lambda: self.routes[name])
        target = self.resolve_target(name)
        if target is None:
            self.problem(loc, self._unknown(name, routes=True))
            return _Invalid(dotted(loc))
        return target

    def resolve_target(self, name: str) -> Target | None:
        """A model alias or `provider/model-id` as a Target (one object per name)."""
        if name in self._targets:
            return self._targets[name]
        if name in self.config.models:
            model = priced(self.config.models[name])
        elif "/" in name:
            provider, _, model_id = name.partition("/")
            if provider not in self.config.providers or not model_id:
                return None
            model = priced(ModelConfig(provider=provider, model=model_id))
        else:
            return None
        provider = self.providers.get(model.provider)
        if provider is None:
            return None
        target = Target(name, provider, model)
        self._targets[name] = target
        return target

    def _unknown(self, name: str, *, routes: bool) -> str:
        known = list(self.config.models) + (list(self.config.routes) if routes else [])
        if "/" in name:
            provider = name.partition("/")[0]
            hint = suggest(provider, self.config.providers)
            return f"unknown provider '{provider}' in '{name}'{hint}"
        what = "route, model alias or provider/model-id" if routes else "model alias"
        return f"unknown {what} '{name}'{suggest(name, known)}"

    def _policy(self, spec: dict[str, Any], loc: Loc) -> Node:
        if len(spec) != 1:
            keys = ", ".join(map(str, spec)) or "none"
            self.problem(
                loc, f"a policy node has exactly one policy key ({', '.join(POLICIES)}); got {keys}"
            )
            return _Invalid(dotted(loc))
        key, body = next(iter(spec.items()))
        policy = POLICIES.get(key)
        if policy is None:
            self.problem(
                (*loc, key),
                f"unknown policy '{key}'{suggest(str(key), POLICIES)}; "
                f"known: {', '.join(POLICIES)}",
            )
            return _Invalid(dotted(loc))
        ploc = (*loc, key)
        if policy.normalize is not None:
            body = policy.normalize(body)
        try:
            config = policy.config.model_validate(body)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                eloc = (*ploc, *error["loc"])
                message = error["msg"]
                if error["type"] == "extra_forbidden":
                    field = str(error["loc"][-1])
                    known = _fields_at(policy.config, error["loc"][:-1])
                    message = f"unknown field '{field}'{suggest(field, known)}"
                self.problem(eloc, message)
            return _Invalid(dotted(loc))
        return traced_policy(key, policy.build(config, self, ploc))


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model at `loc` inside `model`, for suggestions."""
    types: list[Any] = [model]
    for part in loc:
        found: list[Any] = []
        for kind in types:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                field = kind.model_fields.get(str(part))
                found.extend(_inner(field.annotation) if field else [])
            elif get_origin(kind) in (list, dict):  # an index or key: step into the values
                found.extend(_inner(get_args(kind)[-1]))
        types = found
    return [
        name
        for kind in types
        if isinstance(kind, type) and issubclass(kind, BaseModel)
        for name in kind.model_fields
    ]


def _inner(annotation: Any) -> list[Any]:
    """The alternatives of a union (Optional included), else the annotation itself."""
    if get_origin(annotation) in (Union, UnionType):
        return [a for arg in get_args(annotation) for a in _inner(arg)]
    return [annotation]


class _Invalid(Node):
    """Stands in for a node that failed to compile; never served (compile raises first)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def label(self) -> str:
        return "invalid"

    async def complete(self, call: Any) -> Any:
        raise RuntimeError("an invalid node was served")

    def stream(self, call: Any) -> Any:
        raise RuntimeError("an invalid node was served")


class _InvalidTarget(_Invalid, Target):
    def __init__(self, name: str) -> None:
        _Invalid.__init__(self, name)
        self.name = name
