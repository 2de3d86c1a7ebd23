"""The running gateway: providers constructed, routes compiled, ready to serve calls.

Built once from a validated config (and again on reload); held by the app, never global.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from pydantic import ValidationError

from app.chat import ChatRequest
from app.config import ConfigError, Problem, RouterConfig
from app.hops import TracedRoute
from app.routing import Call, Node
from app.spans import RouteTracer
from app.tree import TreeCompiler
from providers import Provider, provider_class


class Gateway:
    def __init__(
        self,
        config: RouterConfig,
        providers: dict[str, Provider],
        routes: dict[str, Node],
        compiler: TreeCompiler,
        tracer: RouteTracer | None = None,
    ) -> None:
        self.config = config
        self.providers = providers
        self.routes = routes
        self._compiler = compiler
        self.env = os.environ.get("ENVIRONMENT", "development")
        self.tracer = tracer  # None: calls are not traced

    @classmethod
    def build(cls, config: RouterConfig, tracer: RouteTracer | None = None) -> Gateway:
        """Construct every provider and compile every route; ConfigError lists all problems.

        Tracing (with its SDK instrumentors) must be in place before this: see app/tracing.py.
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
        compiler = TreeCompiler(config, providers)
        routes = compiler.compile()
        return cls(config, providers, routes, compiler, tracer)

    def node_for(self, name: str) -> Node | None:
        """A route by name, else a model alias or `provider/model-id` as a single target."""
        node = self.routes.get(name) or self._compiler.resolve_target(name)
        if node is None or self.tracer is None:
            return node
        return TracedRoute(name, node)

    def names(self) -> list[tuple[str, str]]:
        """(name, kind) of everything a caller may name: routes, then model aliases."""
        return [(n, "route") for n in self.routes] + [(n, "model") for n in self.config.models]

    def new_call(self, request: ChatRequest, headers: Mapping[str, str] | None = None) -> Call:
        deadline = time.monotonic() + self.config.server.request_timeout_s
        call = Call(request, headers=headers, env=self.env, deadline=deadline)
        call.tracer = self.tracer
        return call

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
