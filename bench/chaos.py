"""The full chaos run: 10,000 requests through failover routes over three faulty upstreams.

Three provider fakes (OpenAI, a local OpenAI-compatible server, Anthropic), each failing 30 % of
its calls (429s with and without Retry-After, 500/503, resets, silence, stalls, cut streams),
behind a gateway whose routes fail over across all three. Every answer is checked against the
upstreams' own logs (tests/chaos.py): answered or a typed error, none past its deadline, the
reported attempts are the calls the upstreams saw, no failed attempt billed. Prints the figures
as JSON; exits non-zero on any problem.

    .venv/bin/python bench/chaos.py [--requests 10000] [--concurrency 32] [--rate 0.3]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.3, help="share of upstream calls faulted")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # The fakes' servers complain of every connection the chaos resets; that is the point.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    report = run_chaos(args.requests, args.concurrency, rate=args.rate, seed=args.seed)
    print(json.dumps(report.summary(), indent=2))
    for problem in report.problems[:50]:
        print(problem, file=sys.stderr)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
