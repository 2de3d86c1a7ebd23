"""Instructions the gateway executes per request, counted by valgrind's callgrind.

    python bench/instructions.py                      # one-target route, 200 requests
    python bench/instructions.py --scenario traced --requests 300
    python bench/instructions.py --scenario sdk-raw   # the issue's reference program, counted alike

Wall-clock figures on a shared 2-core machine move by ±20 % from run to run; an instruction count
does not depend on what else the machine is doing, so it is the figure to compare a change by.
The gateway runs under `valgrind --tool=callgrind` with counting off; after a warm-up, counting is
switched on (`callgrind_control -i on`) for exactly --requests requests sent 16 at a time, then
off, and the total is divided by the requests. The export thread and everything else in the
process is counted too. Under valgrind the gateway is ~50x slower: a run takes a few minutes.

`sdk-raw` and `sdk-raw-traced` count bench/run.py's reference program instead of the gateway: the
openai SDK alone (aiohttp transport, with_raw_response) in a bare Starlette app, untraced and
under OpenInference. The issue measured `sdk-raw` on its own machine (1,620 req/s at 16
connections), so the gateway's count against it says what the gateway would do there, whatever
this machine's speed: about 1,620 x sdk-raw's count / the gateway's count, for work that is
CPU-bound in both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile import SCENARIOS

from run import SDK_RAW, free_port, gateway, nginx, process

# bench/run.py's reference program, in the mode it is started with.
REFERENCES = {"sdk-raw": "plain", "sdk-raw-traced": "traced"}


async def send(url: str, body: dict, count: int, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        left = iter(range(count))

        async def worker() -> None:
            for _ in left:
                response = await client.post(url, json=body)
                response.raise_for_status()
                await response.aread()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=sorted([*SCENARIOS, *REFERENCES]), default="plain")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--keep", metavar="DIR", help="copy callgrind's output here (for callgrind_annotate)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    reference = REFERENCES.get(args.scenario)
    body, traced = SCENARIOS["plain"] if reference else SCENARIOS[args.scenario]
    traced = traced or reference == "traced"
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as upstream:
        sink = f"{upstream}/v1/traces" if traced else None
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",  # one file per thread: the export thread's share apart
            f"--callgrind-out-file={Path(tmp) / 'callgrind.out'}",
        ]
        serving = (
            reference_program(Path(tmp), upstream, reference, valgrind)
            if reference
            else gateway(Path(tmp), upstream, tracing=sink, prefix=valgrind, ready_timeout=600)
        )
        with serving as (url, pid):
            target = url + "/v1/chat/completions"
            asyncio.run(send(target, body, 50, args.concurrency))  # warm-up
            subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True)
            started = time.monotonic()
            asyncio.run(send(target, body, args.requests, args.concurrency))
            if traced:
                time.sleep(2)  # the export thread sends what the requests made (its delay: 0.5 s)
            subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True)
            elapsed = time.monotonic() - started
            # Written now, not at exit: however the gateway is stopped, the counts are on disk.
            subprocess.run(["callgrind_control", "-d", str(pid)], check=True)
        totals = 0
        threads: list[tuple[int, str]] = []
        for path in sorted(Path(tmp).glob("callgrind.out*")):
            text = path.read_text(errors="replace")
            if m := re.search(r"^totals: (\d+)", text, re.M):
                totals += int(m.group(1))
                threads.append((int(m.group(1)), path.name))
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, Path(args.keep) / path.name)
        print(
            f"{args.scenario}: {totals / args.requests / 1e6:.2f} M instructions per request "
            f"({args.requests} requests, {args.concurrency} at a time, "
            f"{elapsed:.0f} s under valgrind)"
        )
        for count, name in sorted(threads, reverse=True):
            if count >= totals / 1000:
                print(f"  {name}: {count / args.requests / 1e6:.2f} M per request")


@contextlib.contextmanager
def reference_program(
    workdir: Path, upstream: str, mode: str, prefix: list[str]
) -> Iterator[tuple[str, int]]:
    """bench/run.py's `sdk-raw` program under `prefix`: (its URL, its pid)."""
    script = workdir / "sdk_raw.py"
    script.write_text(SDK_RAW)
    port = free_port()
    with process(
        [*prefix, sys.executable, str(script), upstream, str(port), mode],
        ready=f"http://127.0.0.1:{port}/healthz",
        ready_timeout=600,
    ) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


if __name__ == "__main__":
    main()
