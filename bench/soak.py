"""The long soak: steady traffic for a while, the gateway's resident memory, open file
descriptors (and, in-process, asyncio tasks) sampled and their trend judged. Prints the figures
and the sampled series as JSON; exits non-zero when memory is not flat after the warm-up (the
fitted RSS trend over the measured window above --max-growth-mb, or above
--max-bytes-per-request) or descriptors or tasks crept.

    .venv/bin/python bench/soak.py [--seconds 600] [--concurrency 8] [--warmup 0.2]
    .venv/bin/python bench/soak.py --process --seconds 900 --warmup-seconds 300 [--no-tracing]

The gateway's in-memory windows (the console's timeline and /v1/stats' recent window, 5 minutes
each) fill during the first 5 minutes, by design and bounded: judge flatness after them.

Two gateways can be soaked:
  in-process (default)  tests/soak.py: the simulated provider (with faults, through a failover
                        route, behind caller keys) on all three chat dialects, streaming and not,
                        every span exported over OTLP to a sink. The client and the sink share the
                        process, so their memory is in the figure too.
  --process             the issue's set-up: `llm-router serve` (one worker) in a process of its
                        own, the openai adapter in front of bench/run.py's nginx upstream, tracing
                        on to a sink (nginx), driven by wrk: the one-target route, the
                        classify → failover route and the streaming route at once. Only the
                        gateway's process is measured; requests are counted from its /metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import REQUEST, gateway, nginx

from tests.soak import Sample, SoakReport, run_soak

# (route, streaming, wrk connections) driven at once for the whole soak
_MIX = [("default", False, 6), ("policy", False, 3), ("stream", True, 3)]


def _metric_total(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def warmup_index(samples: list[Sample], share: float, seconds: float | None) -> int:
    """Samples before this index are the warm-up: the first `seconds`, or else `share` of them."""
    if seconds is None:
        return int(len(samples) * share)
    return next((i for i, s in enumerate(samples) if s.at_s >= seconds), len(samples))


def soak_process(
    seconds: float, *, interval_s: float, tracing: bool
) -> tuple[list[Sample], dict[str, float]]:
    """Soak a served gateway process with wrk; sample its RSS, descriptors and request count."""
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as upstream:
        sink = f"{upstream}/v1/traces" if tracing else None
        with gateway(Path(tmp), upstream, tracing=sink) as (url, pid):
            metrics = url + "/metrics"
            drivers = []
            for route, stream, conns in _MIX:
                body = {"model": route, **REQUEST, **({"stream": True} if stream else {})}
                httpx.post(url + "/v1/chat/completions", json=body, timeout=10).raise_for_status()
                script = Path(tmp) / f"{route}.lua"
                script.write_text(
                    'wrk.method = "POST"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = {json.dumps(json.dumps(body))}\n"
                )
                drivers.append(
                    subprocess.Popen(
                        [
                            "wrk",
                            "-t1",
                            f"-c{conns}",
                            f"-d{seconds:g}s",
                            "-s",
                            str(script),
                            url + "/v1/chat/completions",
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            samples: list[Sample] = []
            started = time.monotonic()
            with httpx.Client(timeout=10) as client:
                while True:
                    time.sleep(interval_s)
                    if any(d.poll() is not None for d in drivers):
                        break  # traffic is ending: connections close, the figures with them
                    text = client.get(metrics).text
                    samples.append(
                        Sample(
                            time.monotonic() - started,
                            int(_metric_total(text, "llm_router_requests_total")),
                            _vm_rss(pid),
                            len(os.listdir(f"/proc/{pid}/fd")),
                            0,
                        )
                    )
                text = client.get(metrics).text
            extra = {
                "spans_dropped": _metric_total(text, "llm_router_spans_dropped_total"),
                "non_2xx": sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("llm_router_requests_total{") and 'status="200"' not in line
                ),
            }
            for d in drivers:
                d.communicate()
    return samples, extra


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=8, help="in-process soak only")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of samples skipped")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        help="skip the first seconds instead (the console keeps 5-minute windows: 300)",
    )
    parser.add_argument("--max-growth-mb", type=float, default=2.0)
    parser.add_argument("--max-bytes-per-request", type=float, default=64.0)
    parser.add_argument("--process", action="store_true", help="soak a served gateway process")
    parser.add_argument("--no-tracing", action="store_true", help="--process without tracing")
    args = parser.parse_args()
    extra: dict[str, float] = {}
    if args.process:
        samples, extra = soak_process(
            args.seconds, interval_s=args.interval, tracing=not args.no_tracing
        )
        report = SoakReport(samples, 0)
    else:
        report = run_soak(args.seconds, concurrency=args.concurrency, interval_s=args.interval)
    report.warmup = warmup_index(report.samples, args.warmup, args.warmup_seconds)
    summary = report.summary()
    summary["warmup_s"] = round(report.measured[0].at_s) if report.measured else None
    summary.update(extra)
    step = max(1, len(report.samples) // 40)
    summary["series"] = [
        {
            "s": round(s.at_s),
            "requests": s.requests,
            "rss_mb": round(s.rss / 2**20, 1),
            "fds": s.fds,
            "tasks": s.tasks,
        }
        for s in report.samples[::step]
    ]
    print(json.dumps(summary, indent=1))
    fds = [s.fds for s in report.measured]
    before, after = report.idle_tasks
    flat = (
        report.rss_growth() <= args.max_growth_mb * 2**20
        and report.rss_slope() <= args.max_bytes_per_request
        and max(fds) - min(fds) <= 4
        and after <= before + 1
    )
    print("flat" if flat else "NOT FLAT", file=sys.stderr)
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
