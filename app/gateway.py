"""The running gateway: providers constructed, routes compiled, ready to serve calls.

Built once from a validated config (and again on reload); held by the app, never global.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from pydantic import ValidationError

from app.breaker import BreakerStore
from app.chat import ChatRequest
from app.config import ConfigError, Problem, RouterConfig
from app.routing import Call, Node
from app.tree import TreeCompiler
from providers import Provider, provider_class


class Gateway:
    def __init__(
        self,
        config: RouterConfig,
        providers: dict[str, Provider],
        routes: dict[str, Node],
        compiler: TreeCompiler,
    ) -> None:
        self.config = config
        self.providers = providers
        self.routes = routes
        self._compiler = compiler
        self.breakers = compiler.breakers
        self.env = os.environ.get("ENVIRONMENT", "development")

    @classmethod
    def build(cls, config: RouterConfig, breakers: BreakerStore | None = None) -> Gateway:
        """Construct every provider and compile every route; ConfigError lists all problems.

        `breakers`: the circuit breakers to keep (a reload passes the old gateway's), else new.
        """
        providers: dict[str, Provider] = {}
        problems: list[Problem] = []
        for name, provider_config in config.providers.items():
            adapter = provider_class(provider_config.type)
            try:
                providers[name] = adapter(name, provider_config)
            except (ValueError, RuntimeError, ValidationError) as exc:
                problems.append(config.problem(("providers", name), f"cannot start: {exc}"))
            except Exception as exc:  # an SDK refusing its settings, e.g. no AWS region
                problems.append(
                    config.problem(("providers", name), f"cannot start: {type(exc).__name__}")
                )
        if problems:
            raise ConfigError(problems)
        compiler = TreeCompiler(config, providers, breakers)
        routes = compiler.compile()
        return cls(config, providers, routes, compiler)

    def node_for(self, name: str) -> Node | None:
        """A route by name, else a model alias or `provider/model-id` as a single target."""
        node = self.routes.get(name)
        if node is not None:
            return node
        return self._compiler.resolve_target(name)

    def names(self) -> list[tuple[str, str]]:
        """(name, kind) of everything a caller may name: routes, then model aliases."""
        return [(n, "route") for n in self.routes] + [(n, "model") for n in self.config.models]

    def new_call(self, request: ChatRequest, headers: Mapping[str, str] | None = None) -> Call:
        deadline = time.monotonic() + self.config.server.request_timeout_s
        return Call(request, headers=headers, env=self.env, deadline=deadline)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
