"""The running gateway: providers constructed, routes compiled, ready to serve calls.

Built once from a validated config (and again on reload); held by the app, never global.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from pydantic import ValidationError

from app.bulkhead import Bulkhead
from app.callers import Callers
from app.chat import ChatRequest
from app.config import ConfigError, Problem, RouterConfig
from app.errors import PayloadTooLarge
from app.hops import TracedRoute, TraceIdRoute
from app.redact import RedactingProvider, Redactor, secrets_of
from app.routing import Call, Node
from app.spans import RouteTracer
from app.state import StateStore, open_store
from app.telemetry import track
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
        state: StateStore | None = None,
    ) -> None:
        self.config = config
        self.providers = providers
        self.routes = routes
        self._compiler = compiler
        self.env = os.environ.get("ENVIRONMENT", "development")
        self.tracer = tracer  # None: calls are not traced
        # The tracer a call's hops get: none where its spans would record nothing.
        self._hops = tracer if tracer is not None and tracer.recording else None
        self.callers = Callers(config.server)
        self.state: StateStore = state or compiler.state
        self.owns_state = True  # closed with the gateway; a reload hands a kept store over

    @classmethod
    def build(
        cls,
        config: RouterConfig,
        tracer: RouteTracer | None = None,
        state: StateStore | None = None,
    ) -> Gateway:
        """Construct every provider and compile every route; ConfigError lists all problems.

        Tracing (with its SDK instrumentors) must be in place before this: see app/tracing.py.
        `state` is the store for limits, budgets and breakers (a reload keeps the old one when
        `state:` did not change); by default one is opened from `config.state`."""
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
        redactor = Redactor(secrets_of(config))  # an upstream quoting a key: scrubbed
        providers = {name: RedactingProvider(p, redactor) for name, p in providers.items()}
        for name, provider in providers.items():
            limit = config.providers[name].max_concurrency
            if limit is not None:
                providers[name] = Bulkhead(provider, limit, config.providers[name].queue_timeout_s)
        state = state if state is not None else open_store(config.state)
        compiler = TreeCompiler(config, providers, state)
        routes = compiler.compile()
        return cls(config, providers, routes, compiler, tracer, state)

    def node_for(self, name: str) -> Node | None:
        """A route by name, else a model alias or `provider/model-id` as a single target."""
        node = self.routes.get(name) or self._compiler.resolve_target(name)
        if node is None or self.tracer is None:
            return node
        if self._hops is None:
            return TraceIdRoute(name, node, self.tracer)
        return TracedRoute(name, node)

    def names(self) -> list[tuple[str, str]]:
        """(name, kind) of everything a caller may name: routes, then model aliases."""
        return [(n, "route") for n in self.routes] + [(n, "model") for n in self.config.models]

    def new_call(self, request: ChatRequest, headers: Mapping[str, str] | None = None) -> Call:
        limit = self.config.server.max_messages
        if len(request.messages) > limit:
            raise PayloadTooLarge(
                f"the request has {len(request.messages)} messages; at most {limit} are accepted",
                code="too_many_messages",
            )
        deadline = time.monotonic() + self.config.server.request_timeout_s
        call = Call(request, headers=headers, env=self.env, deadline=deadline)
        call.tracer = self._hops
        track(call)  # recorded by app.telemetry when the response has been sent
        return call

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        if self.owns_state:
            await self.state.aclose()
