"""The long soak: mixed streaming and non-streaming traffic through the simulated provider on all
three chat dialects, with the gateway's RSS, open file descriptors and asyncio tasks sampled
(tests/soak.py). Prints the figures and the sampled series as JSON; exits non-zero when memory
is not flat after the warm-up (the fitted RSS trend over the measured window above --max-growth-mb,
or above --max-bytes-per-request) or descriptors or tasks crept.

    .venv/bin/python bench/soak.py [--seconds 600] [--concurrency 8] [--warmup 0.2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.soak import run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of samples skipped")
    parser.add_argument("--max-growth-mb", type=float, default=2.0)
    parser.add_argument("--max-bytes-per-request", type=float, default=64.0)
    args = parser.parse_args()
    report = run_soak(
        args.seconds,
        concurrency=args.concurrency,
        interval_s=args.interval,
        warmup_share=args.warmup,
    )
    summary = report.summary()
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
