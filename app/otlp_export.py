"""The OTLP/HTTP span exporter, sending what app/otlp_wire.py encodes.

It is the OpenTelemetry exporter (its endpoint and `OTEL_EXPORTER_OTLP_*` handling, headers,
compression, retries and HTTP session) with two changes: a batch is encoded by `otlp_wire.Encoder`,
about four times cheaper than the exporter's own protobuf objects, with secrets masked as the
strings are written; and its requests session (`SteadySession`) reads what the environment says
of the endpoint once, not on every export. An exporter version that lays out its HTTP client
otherwise falls back to its own encoder (with the spans scrubbed first), so an upgrade can slow
exporting, never break it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from app.otlp_wire import Encoder
from app.redact import Redactor, scrubbed

log = logging.getLogger("llm_router.tracing")

# A session from a credential provider (these variables name one) is the exporter's to load.
CREDENTIAL_PROVIDER_VARS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)


class SteadySession(requests.Session):
    """A requests session that works out the environment's settings for a URL once.

    On every request, requests reads the proxy variables for the URL (scanning the whole
    environment twice) and the CA-bundle variables: about a quarter of the CPU of one export
    when a quiet gateway sends its small batches. The exporter posts to one URL, and what the
    environment says of it is the same on every export: it is worked out by requests itself
    the first time and kept (per URL and session setting; explicit proxies are never kept).
    """

    def __init__(self) -> None:
        super().__init__()
        self._settings: dict[Any, dict[str, Any]] = {}

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        try:
            key = (url, stream, verify, cert, self.stream, self.verify, self.cert)
            key += tuple(self.proxies.items())
            settings = self._settings.get(key)
        except TypeError:  # an unhashable setting: nothing to keep
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        if settings is None:
            settings = super().merge_environment_settings(url, {}, stream, verify, cert)
            if len(self._settings) < 16:
                self._settings[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}


class WireOTLPSpanExporter(OTLPSpanExporter):
    def __init__(self, *, redactor: Redactor | None = None, **kwargs: Any) -> None:
        if kwargs.get("session") is None and not any(
            os.environ.get(name) for name in CREDENTIAL_PROVIDER_VARS
        ):
            kwargs["session"] = SteadySession()
        super().__init__(**kwargs)
        self.redactor = redactor if redactor is not None and redactor.secrets else None
        self.encoder = Encoder(scrub=self.redactor)
        client = getattr(self, "_client", None)
        self._send = getattr(client, "export", None)
        self._max_bytes: int | None = getattr(self, "_max_request_size", None)
        if self._send is None:
            log.info("tracing: this OTLP exporter version encodes its own batches (slower)")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._send is None or getattr(self, "_shutdown", False):
            if self.redactor is not None:
                spans = [scrubbed(span, self.redactor) for span in spans]
            return super().export(spans)
        try:
            data = self.encoder.encode(spans)
        except Exception as exc:  # a value no encoder could write: lose the batch, not the thread
            log.warning("tracing: a span batch could not be encoded: %s", exc)
            return SpanExportResult.FAILURE
        if self._max_bytes and len(data) > self._max_bytes:  # 0: no limit
            log.warning(
                "tracing: a span batch of %d bytes exceeds the exporter's limit of %d; dropped",
                len(data),
                self._max_bytes,
            )
            return SpanExportResult.FAILURE
        result = self._send(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
