"""Where the gateway's CPU goes: CPU time per request, and optionally a py-spy profile.

    python bench/profile.py                          # one-target route, 16 connections, 8 s
    python bench/profile.py --scenario traced        # tracing on, to nginx standing in as collector
    python bench/profile.py --scenario stream --py-spy /tmp/stream.txt
    python bench/profile.py --server granian --workers 2

The figure to read is "CPU µs per request" of the gateway: the user+system CPU time of its
processes (a supervisor and its workers, with --workers or granian) divided by the requests wrk
completed. Unlike req/s it hardly moves when other work shares the machine, so it is the figure to
compare before and after a change. It is split between the processes' main threads (the event
loop) and their other threads (with tracing on, mostly the span-export thread: see
docs/tracing.md). With --py-spy, py-spy samples the serving process for the run
and writes collapsed stacks (flamegraph input) to the file given. --server granian serves the same
app factory under granian (`pip install granian`) for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import REQUEST, cpu_seconds, gateway, nginx, wrk

SCENARIOS = {
    "plain": ({"model": "default", **REQUEST}, False),
    "policy": ({"model": "policy", **REQUEST}, False),
    "stream": ({"model": "stream", **REQUEST, "stream": True}, False),
    "traced": ({"model": "default", **REQUEST}, True),
    "traced-stream": ({"model": "stream", **REQUEST, "stream": True}, True),
}


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """User+system CPU so far of the main threads and of the other threads of the processes in
    `pid`'s process group (live threads only: enough for a run's before/after difference)."""
    main = other = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pid:
                continue
            for task in (proc / "task").iterdir():
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                used = (int(fields[11]) + int(fields[12])) / tick
                if task.name == proc.name:
                    main += used
                else:
                    other += used
        except (OSError, ValueError):
            continue
    return main, other


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="plain")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--py-spy", metavar="FILE", help="write py-spy collapsed stacks here")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    body, traced = SCENARIOS[args.scenario]
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as upstream:
        sink = f"{upstream}/v1/traces" if traced else None
        with gateway(
            Path(tmp), upstream, tracing=sink, server=args.server, workers=args.workers
        ) as (url, pid):
            target = url + "/v1/chat/completions"
            wrk(target, body, 4, 2)  # warm-up
            for _ in range(args.rounds):
                spy = None
                if args.py_spy:
                    spy = subprocess.Popen(
                        [
                            shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                            "record",
                            "--pid",
                            str(pid),
                            "--subprocesses",  # the workers, under a supervisor
                            "--format",
                            "raw",
                            "--rate",
                            "250",
                            "--duration",
                            str(int(args.duration)),
                            "--output",
                            args.py_spy,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(0.5)
                before = cpu_seconds(pid)
                threads_before = thread_cpu_seconds(pid)
                rps, p50, _, p99, errors = wrk(target, body, args.connections, args.duration)
                used = cpu_seconds(pid) - before
                threads_after = thread_cpu_seconds(pid)
                loop_s = threads_after[0] - threads_before[0]
                other_s = threads_after[1] - threads_before[1]
                requests = rps * args.duration
                print(
                    f"{args.scenario} {args.server} {args.workers}w c={args.connections}: "
                    f"{rps:,.0f} req/s, p50 {p50:.2f} ms, "
                    f"p99 {p99:.2f} ms, errors {errors}, gateway CPU {used:.2f} s, "
                    f"{used / requests * 1e6:,.0f} CPU µs per request "
                    f"(main threads {loop_s / requests * 1e6:,.0f}, "
                    f"other threads {other_s / requests * 1e6:,.0f})",
                    flush=True,
                )
                if spy:
                    spy.wait()


if __name__ == "__main__":
    main()
