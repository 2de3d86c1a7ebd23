"""The OTLP/HTTP span exporter, sending what app/otlp_wire.py encodes.

It is the OpenTelemetry exporter (its endpoint and `OTEL_EXPORTER_OTLP_*` handling, headers,
compression, retries and HTTP session) with one change: a batch is encoded by `otlp_wire.Encoder`,
about four times cheaper than the exporter's own protobuf objects, with secrets masked as the
strings are written. An exporter version that lays out its HTTP client otherwise falls back to
its own encoder (with the spans scrubbed first), so an upgrade can slow exporting, never break it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from app.otlp_wire import Encoder
from app.redact import Redactor, scrubbed

log = logging.getLogger("llm_router.tracing")


class WireOTLPSpanExporter(OTLPSpanExporter):
    def __init__(self, *, redactor: Redactor | None = None, **kwargs: Any) -> None:
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
