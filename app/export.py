"""Getting finished spans out without ever making a request wait for the collector.

`BoundedBatchProcessor` keeps finished spans in a bounded queue that one background thread
drains in batches into the exporter. A request only appends to the queue: when the collector is
slow, hanging or gone, the queue fills and further spans are dropped, counted, and reported in
one log line per interval, never one per span (the SDK's own batch processor logs each drop and
keeps no count).

The thread sends a batch when `max_batch` spans are waiting or `delay_s` has passed since it
last sent (or when flushed), never sooner: one POST through the exporter's requests session
takes ~560 µs of CPU here, as much as encoding some 20 spans, and a thread that sent whatever had
arrived as soon as the previous POST was done sent a batch every few milliseconds under load,
each small, all of it under the event loop's GIL.

Nor much later: encoding holds the GIL, and every request in flight waits while a batch is
encoded. 128 spans (32 traced requests) take some 4 ms; 512 took some 15 ms, which showed in the
tail (bench/run.py, tracing on, medians of three rounds: p99 at 16 connections 42 → 34 ms, at 1
connection 9.0 → 5.3 ms) for some 2 % more CPU per request in POSTs.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("llm_router.tracing")


class BoundedBatchProcessor(SpanProcessor):
    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue: int = 4096,
        max_batch: int = 128,
        delay_s: float = 0.5,
        report_every_s: float = 60.0,
    ) -> None:
        self.exporter = exporter
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.delay_s = delay_s
        self.report_every_s = report_every_s
        self.dropped = 0  # since start
        self.exported = 0
        self.failed = 0  # spans in batches the exporter said it could not deliver
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Condition()
        self._flushed = threading.Condition()
        self._in_flight = 0
        self._flushing = 0  # force_flush calls under way: send without waiting for a full batch
        self._stopping = False
        self._dropped_reported = 0
        self._last_report = time.monotonic()
        self._worker = threading.Thread(target=self._run, name="span-export", daemon=True)
        self._worker.start()

    # -- called on the request path: must never block ----------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopping or not span.context.trace_flags.sampled:
            return
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(span)
        if len(self._queue) >= self.max_batch:
            with self._wake:
                self._wake.notify()

    # -- the export thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wait_for_batch(time.monotonic() + self.delay_s)
            if self._stopping and not self._queue:
                return
            self._export_some()
            self._report_drops()

    def _wait_for_batch(self, until: float) -> None:
        """Until a full batch waits, `until` (monotonic) passes, a flush finds spans waiting,
        or a stop is asked."""
        with self._wake:
            while (
                len(self._queue) < self.max_batch
                and not (self._flushing and self._queue)
                and not self._stopping
            ):
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                self._wake.wait(remaining)

    def _export_some(self) -> None:
        # In flight before the queue is emptied: a flush must never see neither.
        self._in_flight = min(len(self._queue), self.max_batch)
        batch: list[ReadableSpan] = []
        while self._queue and len(batch) < self.max_batch:
            batch.append(self._queue.popleft())
        if not batch:
            self._in_flight = 0
            return
        try:
            result = self.exporter.export(batch)
            if result.name == "SUCCESS":
                self.exported += len(batch)
            else:
                self.failed += len(batch)
        except Exception as exc:  # an exporter bug must not kill the thread
            self.failed += len(batch)
            log.warning("span export failed: %s", type(exc).__name__)
        finally:
            self._in_flight = 0
            with self._flushed:
                self._flushed.notify_all()

    def _report_drops(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.report_every_s:
            return
        fresh = self.dropped - self._dropped_reported
        if fresh:
            log.warning(
                "tracing: %d span(s) dropped in the last %.0fs: the collector is not keeping up"
                " (%d dropped since start)",
                fresh,
                now - self._last_report,
                self.dropped,
            )
        self._dropped_reported = self.dropped
        self._last_report = now

    # -- lifecycle ---------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        with self._wake:
            self._flushing += 1
            self._wake.notify()
        try:
            with self._flushed:
                while self._queue or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._flushed.wait(min(remaining, 0.05))
                    with self._wake:
                        self._wake.notify()
            return True
        finally:
            with self._wake:
                self._flushing -= 1

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Flush what the collector will take within `timeout_s`, then let go of the rest."""
        if self._stopping:  # once only: the tracer provider also calls this at exit
            return
        self.force_flush(int(timeout_s * 1000))
        self._stopping = True
        with self._wake:
            self._wake.notify()
        self._worker.join(timeout=max(0.1, timeout_s / 2))
        left = len(self._queue)
        if left:  # the collector did not take them in time: let go, so the thread can end
            self._queue.clear()
            self.dropped += left
        self._report_drops(force=True)
        if not self._worker.is_alive():
            self.exporter.shutdown()
        # else: the thread is stuck in a hanging export; it is a daemon and dies with us.
