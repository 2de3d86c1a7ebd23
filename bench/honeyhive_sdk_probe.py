"""Measure HoneyHive's SDK as the gateway would use it (docs/tracing.md, "Why not HoneyHive's SDK").

Needs `pip install honeyhive` (not a dependency of the gateway). Starts a loopback collector that
accepts connections and never answers, then reports how long `HoneyHiveTracer.init` blocks and the
cost per span of its processor against the plain OpenTelemetry SDK. Bounded: 5000 spans each.

    python bench/honeyhive_sdk_probe.py
"""

from __future__ import annotations

import socket
import threading
import time

from honeyhive import HoneyHiveTracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

SPANS = 5000


def silent_collector() -> str:
    """A loopback server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def per_span_us(tracer: Tracer) -> float:
    started = time.perf_counter()
    for i in range(SPANS):
        with tracer.start_as_current_span("s") as span:
            span.set_attribute("i", i)
    return (time.perf_counter() - started) / SPANS * 1e6


def main() -> None:
    url = silent_collector()
    started = time.perf_counter()
    hh = HoneyHiveTracer.init(api_key="hh-probe", server_url=url, source="probe")
    print(f"HoneyHiveTracer.init blocked for {time.perf_counter() - started:.2f} s")
    print(f"honeyhive span processor: {per_span_us(hh.provider.get_tracer('probe')):.1f} µs/span")
    plain = TracerProvider(shutdown_on_exit=False).get_tracer("probe")
    print(f"plain OpenTelemetry SDK:  {per_span_us(plain):.1f} µs/span")


if __name__ == "__main__":
    main()
