"""Tracing set-up: one tracer provider per process, from the `tracing:` config (SPEC "Tracing").

`Tracing.start` runs before any provider is constructed: the Bedrock instrumentors patch boto3's
client factory, so only clients made after them are traced. It builds the tracer provider (never
the global one: nothing else in the process is affected), stamps the HoneyHive shape on every
span (app/honeyhive.py), sends finished spans through a bounded queue to the exporter
(app/export.py) so that a request never waits for the collector, and puts the providers' SDK
instrumentors in place (app/instrumentors.py). What it did is logged once at start.

Exporters: `honeyhive` (OTLP/HTTP protobuf to `{api_url}/opentelemetry/v1/traces` with
`Authorization: Bearer <key>` and `X-Source`), `otlp` (`tracing.endpoint`, else the standard
`OTEL_EXPORTER_OTLP_*` variables), `console`, `none` (spans are made for their trace ids and
`traceparent` only: not recorded, not exported, and no instrumentor is installed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from app import __version__, honeyhive
from app.config import ConfigError, Problem, TracingConfig
from app.export import BoundedBatchProcessor
from app.honeyhive import OUR_SCOPE, StampSampler, default_sampler
from app.instrumentors import (
    SDK_OF_TYPE,
    TRACELOOP_CONTENT_VAR,
    Installed,
    conflicts,
    families_by_sdk,
    install,
)
from app.lean_spans import LeanTracerProvider
from app.redact import RedactingExporter, Redactor, secrets_of
from app.spans import RouteTracer
from providers.base import ProviderConfig

log = logging.getLogger("llm_router.tracing")

EXPORT_TIMEOUT_S = 5.0  # one export attempt; a hanging collector holds the export thread this long


def _key(config: TracingConfig, env: Mapping[str, str]) -> str:
    key = config.api_key.get_secret_value() if config.api_key else ""
    return key or env.get("HH_API_KEY", "")


def _exporter(
    config: TracingConfig, env: Mapping[str, str], redactor: Redactor
) -> tuple[SpanExporter | None, str]:
    """The exporter for the config (masking the secrets) and where it sends, or ConfigError."""
    if config.exporter == "none":
        return None, "nowhere (exporter: none)"
    if config.exporter == "console":
        return RedactingExporter(ConsoleSpanExporter(), redactor), "the console"
    from app.otlp_export import WireOTLPSpanExporter

    if config.exporter == "otlp":
        endpoint = config.endpoint or None  # None: the exporter reads OTEL_EXPORTER_OTLP_*
        exporter = WireOTLPSpanExporter(
            endpoint=endpoint, timeout=EXPORT_TIMEOUT_S, redactor=redactor
        )
        return exporter, getattr(exporter, "_endpoint", "the OTLP endpoint")
    key = _key(config, env)
    if not key:
        raise ConfigError(
            [
                Problem(
                    "tracing.api_key",
                    "exporter honeyhive needs an API key: set tracing.api_key or HH_API_KEY "
                    "(or choose exporter otlp, console or none)",
                )
            ]
        )
    api_url = config.api_url or env.get("HH_API_URL") or honeyhive.DEFAULT_API_URL
    endpoint = honeyhive.traces_endpoint(api_url)
    exporter = WireOTLPSpanExporter(
        endpoint=endpoint,
        headers=honeyhive.export_headers(key, config.source),
        timeout=EXPORT_TIMEOUT_S,
        redactor=redactor,
    )
    return exporter, endpoint


class Tracing:
    """The process's tracer provider, its export pipeline and its instrumentors."""

    def __init__(
        self,
        config: TracingConfig,
        provider: TracerProvider,
        batch: BoundedBatchProcessor | None,
        installed: Installed,
        content_var: tuple[bool, str | None],
    ) -> None:
        self.config = config
        self.provider = provider
        self.batch = batch
        self.installed = installed
        self._content_var = content_var  # (set by us, the value it had before)
        instrumented_types = frozenset(
            kind for kind, sdk in SDK_OF_TYPE.items() if sdk in installed.instrumented
        )
        # Without an export pipeline the sampler records nothing (see `start`).
        self.route_tracer = RouteTracer(
            provider.get_tracer(OUR_SCOPE, __version__),
            instrumented_types,
            recording=batch is not None,
        )

    @classmethod
    def start(
        cls,
        config: TracingConfig,
        providers: Mapping[str, ProviderConfig],
        env: Mapping[str, str] | None = None,
    ) -> Tracing:
        env = os.environ if env is None else env
        problems = [
            Problem(f"providers.{name}.instrumentation", message)
            for name, message in conflicts(providers)
        ]
        if problems:
            raise ConfigError(problems)
        # What an upstream quoted of a key never leaves in a span.
        redactor = Redactor(secrets_of(config, dict(providers)))
        exporter, destination = _exporter(config, env, redactor)
        resource = Resource.create(
            {
                "service.name": "llm-router",
                "service.version": __version__,
                "deployment.environment": config.source,
                honeyhive.PROJECT: config.project,
                honeyhive.SOURCE: config.source,
            }
        )
        # With nowhere to send them, spans are made only for their ids (x-trace-id, traceparent):
        # a sampler that records nothing keeps the ids and skips attributes and processors.
        # Otherwise the SDK's own choice of sampler, stamping the HoneyHive shape on what it keeps.
        sampler = (
            ALWAYS_OFF
            if exporter is None
            else StampSampler(config.project, config.source, default_sampler())
        )
        provider = LeanTracerProvider(resource=resource, sampler=sampler)
        batch: BoundedBatchProcessor | None = None
        installed = Installed()
        content_var: tuple[bool, str | None] = (False, None)
        if exporter is not None:
            batch = BoundedBatchProcessor(exporter, max_queue=config.max_queue)
            provider.add_span_processor(batch)
            families = set(families_by_sdk(providers).values())
            if "traceloop" in families:
                # Traceloop's instrumentors read their content switch from the environment only.
                content_var = (True, os.environ.get(TRACELOOP_CONTENT_VAR))
                os.environ[TRACELOOP_CONTENT_VAR] = "true" if config.capture_content else "false"
            installed = install(providers, provider, capture=config.capture_content)
        tracing = cls(config, provider, batch, installed, content_var)
        log.info("tracing: spans go to %s", destination)
        for sdk, what in installed.report.items():
            (log.warning if what.startswith("NOT") else log.info)("tracing: %s %s", sdk, what)
        return tracing

    @property
    def dropped(self) -> int:
        return self.batch.dropped if self.batch else 0

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self.batch.force_flush(int(timeout_s * 1000)) if self.batch else True

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Undo the instrumentation and send what the collector takes within `timeout_s`."""
        self.installed.uninstrument()
        was_set, before = self._content_var
        if was_set and before is None:
            os.environ.pop(TRACELOOP_CONTENT_VAR, None)
        elif was_set and before is not None:
            os.environ[TRACELOOP_CONTENT_VAR] = before
        if self.batch is not None:
            self.batch.shutdown(timeout_s)
