"""The gateway benchmark: a fixed fast upstream, the gateway in front of it, wrk driving both.

    python bench/run.py                       # everything: ~8 minutes
    python bench/run.py --quick               # fewer scenarios, shorter runs
    python bench/run.py --only gateway --duration 5 --connections 1 16
    python bench/run.py --rounds 3 --duration 5   # every figure the median of three whole rounds

It starts nginx (Debian's package) answering a chat completion as JSON and as SSE, then measures,
each at 1, 16 and 64 connections for --duration seconds with wrk (Debian's package):
  upstream          nginx alone (the floor every other figure is measured against)
  gateway           llm-router, one worker, a one-target route through the openai adapter
  gateway-policy    the same, through a classify (rules) → failover route
  gateway-stream    the same target, streaming
  gateway-traced    one-target route, tracing on, exporting OTLP to nginx (a sink that drops)
  gateway-traced-policy, gateway-traced-stream   the policy and streaming routes, tracing on
  gateway-2w        one-target route, --workers 2
  gateway-granian   one-target route, the same app under granian (ASGI, 1 worker; --granian)
  passthrough       a bare Starlette + httpx pass-through (what a minimal proxy costs)
  sdk-raw           the openai SDK alone in a bare Starlette app: aiohttp transport,
                    with_raw_response (the issue's reference for the SDK's own ceiling)
  sdk-raw-traced    the same with OpenInference on the SDK, exporting OTLP to nginx
  litellm           LiteLLM proxy, installed by this script into bench/.venv-litellm (--litellm)
Everything listens on 127.0.0.1 and every run is bounded by --duration (times --rounds). Results:
a table on stdout, bench/results/latest.json and, when matplotlib is importable,
bench/results/latest.png. With --rounds N every figure is the median of N whole rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "ROUTER_CONFIG"  # where app.cli.app_from_env reads the config path
RESULTS = ROOT / "bench" / "results"

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Rain taps the window; the kettle answers.",
            },
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 21, "completion_tokens": 11, "total_tokens": 32},
}


def sse_body() -> str:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
    }
    chunks = [{"role": "assistant", "content": ""}] + [
        {"content": w}
        for w in ("Rain ", "taps ", "the ", "window; ", "the ", "kettle ", "answers.")
    ]
    lines = []
    for delta in chunks:
        choice = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
        lines.append("data: " + json.dumps({**base, "choices": [choice]}))
    end = {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    lines.append("data: " + json.dumps({**base, "choices": [end]}))
    usage = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}
    lines.append("data: " + json.dumps({**base, "choices": [], "usage": usage}))
    lines.append("data: [DONE]")
    return "\n\n".join(lines) + "\n\n"


REQUEST = {"messages": [{"role": "user", "content": "Write a haiku about rain"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def rss_mb(pid: int, *, largest: bool = False) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MB: all together, or
    the largest one process (`largest`: a worker's, where a supervisor holds a copy too)."""
    sizes = []
    pids = [pid]
    with contextlib.suppress(FileNotFoundError, subprocess.CalledProcessError):
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    for p in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]))
    return (max(sizes, default=0) if largest else sum(sizes)) / 1024


def cpu_seconds(pid: int) -> float:
    """User+system CPU of the gateway: its process and every process of its group (the server
    is started in a session of its own: a supervisor's workers count too, and so do workers that
    exited, through their parent's children times once reaped)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:  # the process group
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def long_gc_pauses(metrics_url: str) -> int | None:
    """Garbage collections that held the gateway over 50 ms so far (its /metrics histogram)."""
    try:
        text = httpx.get(metrics_url, timeout=5).text
    except httpx.HTTPError:
        return None
    total = under = 0.0
    for line in text.splitlines():
        if line.startswith("llm_router_gc_pause_seconds_count"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("llm_router_gc_pause_seconds_bucket") and 'le="0.05"' in line:
            under += float(line.rsplit(" ", 1)[1])
    return round(total - under)


@contextlib.contextmanager
def process(
    cmd: list[str],
    *,
    ready: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    ready_timeout: float = 60,
) -> Iterator[subprocess.Popen]:
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_ready(ready, proc, timeout=ready_timeout)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()


@contextlib.contextmanager
def nginx(workdir: Path) -> Iterator[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        sys.exit("nginx is needed: apt-get install nginx-light (or nginx)")
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        textwrap.dedent(f"""
        worker_processes 1;
        daemon off;
        pid {workdir}/nginx.pid;
        error_log {workdir}/nginx-error.log warn;
        events {{ worker_connections 4096; }}
        http {{
          access_log off;
          client_body_temp_path {workdir}/body;
          keepalive_requests 1000000;
          server {{
            listen 127.0.0.1:{port};
            location = /json/v1/chat/completions {{
              default_type application/json;
              return 200 '{json.dumps(COMPLETION)}';
            }}
            location = /sse/v1/chat/completions {{
              default_type text/event-stream;
              return 200 '{sse_body()}';
            }}
            location = /v1/traces {{
              default_type application/x-protobuf;
              return 200 '';
            }}
          }}
        }}
    """)
    )
    with process(
        [binary, "-c", str(conf), "-p", str(workdir)],
        ready=f"http://127.0.0.1:{port}/json/v1/chat/completions",
    ):
        yield f"http://127.0.0.1:{port}"


@dataclass
class Result:
    name: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    rss_mb: float | None = None
    added_p50_ms: float | None = None
    cpu_us: float | None = None  # the gateway's CPU per request (all its processes)
    long_gc: int | None = None  # collections over 50 ms during the step
    extra: dict = field(default_factory=dict)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str, body: dict, connections: int, duration: float
) -> tuple[float, float, float, float, int]:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    script.write(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    script.close()
    threads = min(connections, 2)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        script.name,
        url,
    ]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        # wrk itself stuck (seen once with 64 connections to a 2-worker gateway): say so, go on.
        os.unlink(script.name)
        print(f"  wrk did not finish within {duration + 60:g}s against {url}", flush=True)
        nan = float("nan")
        return 0.0, nan, nan, nan, -1
    out = run.stdout
    os.unlink(script.name)
    if "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed: {run.stdout}{run.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return rps, _ms(pct["50"]), _ms(pct["90"]), _ms(pct["99"]), errors


def gateway_config(upstream: str, *, tracing: str | None) -> str:
    lines = [
        "providers:",
        f"  up: {{type: openai, base_url: '{upstream}/json/v1', api_key: bench}}",
        f"  up-sse: {{type: openai, base_url: '{upstream}/sse/v1', api_key: bench}}",
        "models:",
        "  fast: {provider: up, model: gpt-4o-mini}",
        "  backup: {provider: up, model: gpt-4o}",
        "  streamer: {provider: up-sse, model: gpt-4o-mini}",
        "routes:",
        "  default: fast",
        "  stream: streamer",
        "  policy:",  # classify by keyword rules, then a failover chain
        "    classify:",
        "      rules: {creative: [haiku, poem], analytical: [analyze, compare]}",
        "      branches: {creative: {failover: [fast, backup]}, analytical: backup}",
        "      otherwise: fast",
    ]
    if tracing:
        lines += ["tracing:", "  exporter: otlp", f"  endpoint: '{tracing}'"]
    return "\n".join(lines) + "\n"


def measure(
    name: str,
    url: str,
    body: dict,
    conns: list[int],
    duration: float,
    pid: int | None,
    baseline: dict[int, float],
    metrics: str | None = None,
) -> list[Result]:
    results = []
    # Warm up: imports, pools, caches.
    subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-s", "/dev/null", url], capture_output=True)
    for c in conns:
        httpx.post(url, json=body, timeout=10)
        cpu_before = cpu_seconds(pid) if pid else 0.0
        gc_before = long_gc_pauses(metrics) if metrics else None
        rps, p50, p90, p99, errors = wrk(url, body, c, duration)
        result = Result(name, c, rps, p50, p90, p99, errors, rss_mb=rss_mb(pid) if pid else None)
        if pid:
            result.extra["largest_process_mb"] = rss_mb(pid, largest=True)
        if pid and rps:
            result.cpu_us = round((cpu_seconds(pid) - cpu_before) / (rps * duration) * 1e6)
        if metrics and gc_before is not None:
            gc_after = long_gc_pauses(metrics)
            result.long_gc = None if gc_after is None else gc_after - gc_before
        if c in baseline:
            result.added_p50_ms = round(p50 - baseline[c], 3)
        results.append(result)
        print(
            f"  {name:16} c={c:<3} {rps:9.0f} req/s  p50 {p50:7.2f} ms  p90 {p90:7.2f}  "
            f"p99 {p99:7.2f}  err {errors}"
            + (f"  rss {result.rss_mb:.0f} MB" if result.rss_mb else "")
            + (f"  cpu {result.cpu_us} µs/req" if result.cpu_us else "")
            + (f"  gc>50ms {result.long_gc}" if result.long_gc is not None else ""),
            flush=True,
        )
    return results


def gateway(
    workdir: Path,
    upstream: str,
    *,
    workers: int = 1,
    tracing: str | None = None,
    python: str = sys.executable,
    server: str = "uvicorn",
    prefix: Sequence[str] = (),
    ready_timeout: float = 60,
) -> contextlib.AbstractContextManager:
    """The gateway serving a one-target, a policy and a streaming route in front of `upstream`;
    `prefix` runs it under another program (bench/instructions.py: valgrind)."""
    RESULTS.mkdir(parents=True, exist_ok=True)  # the gateway's log goes there
    config = workdir / f"router-{workers}-{bool(tracing)}.yaml"
    config.write_text(gateway_config(upstream, tracing=tracing))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        python,
        "-m",
        "app.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    if server == "granian":
        # The same app factory under granian (ASGI), for comparison: `pip install granian`.
        env[CONFIG_ENV] = str(config)
        cmd = [
            python,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "app.cli:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]

    @contextlib.contextmanager
    def run() -> Iterator[tuple[str, int]]:
        with process(
            [*prefix, *cmd],
            ready=f"http://127.0.0.1:{port}/healthz",
            env=env,
            cwd=ROOT,
            log=RESULTS / f"gateway-{server}-{workers}w-{port}.log",
            ready_timeout=ready_timeout,
        ) as proc:
            yield f"http://127.0.0.1:{port}", proc.pid

    return run()


PASSTHROUGH = """
import httpx, sys
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
upstream = sys.argv[1]
client = httpx.AsyncClient(base_url=upstream, limits=httpx.Limits(max_connections=200))
async def chat(request):
    body = await request.body()
    r = await client.post("/json/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"})
    return Response(r.content, status_code=r.status_code, media_type="application/json")
async def health(request):
    return Response("ok")
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/healthz", health)])
if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


# The issue's reference for what the gateway can reach: the openai SDK alone, on its aiohttp
# transport, with_raw_response (no response models built), answering from a bare Starlette app.
# With a second argument "traced" it is instrumented as a user of the bare SDK would do it:
# OpenInference on the SDK and a batch span processor exporting OTLP to the same sink.
SDK_RAW = """
import sys
import httpx2
import openai
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
upstream, port, traced = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "traced"
if traced:
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(upstream + "/v1/traces")))
    OpenAIInstrumentor().instrument(tracer_provider=provider)
limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)  # as the gateway's
client = openai.AsyncOpenAI(
    base_url=upstream + "/json/v1", api_key="bench",
    http_client=openai.DefaultAioHttpClient(limits=limits),
)
async def chat(request):
    body = await request.json()
    raw = await client.chat.completions.with_raw_response.create(
        model=body["model"], messages=body["messages"]
    )
    return Response(raw.content, media_type="application/json")
async def health(request):
    return Response("ok")
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/healthz", health)])
if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def supports_tracing() -> bool:
    return (ROOT / "app" / "tracing.py").exists()


LITELLM_CONFIG = """
model_list:
  - model_name: default
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}/json/v1
      api_key: bench
  - model_name: stream
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}/sse/v1
      api_key: bench
litellm_settings:
  telemetry: false
general_settings: {{}}
"""


def litellm_python() -> str:
    venv = ROOT / "bench" / ".venv-litellm"
    python = venv / "bin" / "python"
    if not python.exists():
        print("installing LiteLLM proxy into bench/.venv-litellm …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True)
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--only", nargs="+", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM proxy")
    parser.add_argument("--granian", action="store_true", help="also measure the app under granian")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every scenario this many times, one whole round after another, and report"
        " each figure's median over the rounds",
    )
    parser.add_argument(
        "--report",
        metavar="JSON",
        help="measure nothing: print the tables of a run saved as bench/results/latest.json",
    )
    args = parser.parse_args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        rounds = [[Result(**r) for r in one] for one in saved.get("rounds", [])] or None
        report([Result(**r) for r in saved["results"]], rounds, save=False)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    if args.quick:
        args.duration = min(args.duration, 4)
    wanted = set(
        args.only
        or [
            "upstream",
            "gateway",
            "gateway-policy",
            "gateway-stream",
            "gateway-traced",
            "gateway-traced-policy",
            "gateway-traced-stream",
            "gateway-2w",
            "passthrough",
            "sdk-raw",
            "sdk-raw-traced",
        ]
        + (["litellm"] if args.litellm else [])
        + (["gateway-granian"] if args.granian else [])
    )
    conns = args.connections
    RESULTS.mkdir(parents=True, exist_ok=True)
    rounds: list[list[Result]] = []
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as upstream:
        print("upstream and scenarios on 127.0.0.1; durations", args.duration, "s", flush=True)
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}", flush=True)
            rounds.append(one_round(Path(tmp), upstream, wanted, conns, args.duration))
    report(median_results(rounds), rounds if args.rounds > 1 else None)


def one_round(
    workdir: Path, upstream: str, wanted: set[str], conns: list[int], duration: float
) -> list[Result]:
    """Every wanted scenario once, each at every connection count, in a fixed order."""
    results: list[Result] = []
    direct = f"{upstream}/json/v1/chat/completions"
    body = {"model": "default", **REQUEST}
    base = measure("upstream", direct, body, conns, duration, None, {})
    baseline = {r.connections: r.p50_ms for r in base}
    if "upstream" in wanted:
        results += base

    def served(name: str, url: str, pid: int, model: str = "default", stream: bool = False):
        """One gateway scenario: its route, streamed or not (no added p50 for a stream)."""
        return measure(
            name,
            url + "/v1/chat/completions",
            {**body, "model": model, **({"stream": True} if stream else {})},
            conns,
            duration,
            pid,
            {} if stream else baseline,
            metrics=url + "/metrics",
        )

    routes = (("default", False), ("policy", False), ("stream", True))
    untraced = dict(zip(("gateway", "gateway-policy", "gateway-stream"), routes, strict=True))
    if wanted & set(untraced):
        with gateway(workdir, upstream) as (url, pid):
            for name, (model, stream) in untraced.items():
                if name in wanted:
                    results += served(name, url, pid, model, stream)
    traced = ("gateway-traced", "gateway-traced-policy", "gateway-traced-stream")
    if wanted & set(traced) and supports_tracing():
        # nginx stands in for a fast local collector: it accepts each OTLP export and drops it.
        sink = f"{upstream}/v1/traces"
        with gateway(workdir, upstream, tracing=sink) as (url, pid):
            for name, (model, stream) in zip(traced, routes, strict=True):
                if name in wanted:
                    results += served(name, url, pid, model, stream)
    for name, how in (("gateway-2w", {"workers": 2}), ("gateway-granian", {"server": "granian"})):
        if name in wanted:
            with gateway(workdir, upstream, **how) as (url, pid):
                results += served(name, url, pid)
    # The bare apps the gateway is compared with: (scenario, script, its mode argument).
    bare = (
        ("passthrough", PASSTHROUGH, []),
        ("sdk-raw", SDK_RAW, ["plain"]),
        ("sdk-raw-traced", SDK_RAW, ["traced"]),
    )
    for name, text, mode in bare:
        if name not in wanted:
            continue
        port = free_port()
        script = workdir / f"{name}.py"
        script.write_text(text)
        with process(
            [sys.executable, str(script), upstream, str(port), *mode],
            ready=f"http://127.0.0.1:{port}/healthz",
        ) as proc:
            results += measure(
                name,
                f"http://127.0.0.1:{port}/v1/chat/completions",
                body,
                conns,
                duration,
                proc.pid,
                baseline,
            )
    if "litellm" in wanted:
        python = litellm_python()
        config = workdir / "litellm.yaml"
        config.write_text(LITELLM_CONFIG.format(upstream=upstream))
        port = free_port()
        litellm = Path(python).parent / "litellm"
        # Loopback only: no master key, as the gateway runs with no caller keys here.
        env = {
            **os.environ,
            "LITELLM_LOG": "ERROR",
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        }
        with process(
            [str(litellm), "--config", str(config), "--port", str(port), "--num_workers", "1"],
            ready=f"http://127.0.0.1:{port}/health/liveliness",
            env=env,
            log=workdir / "litellm.log",
        ) as proc:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            results += measure("litellm", url, body, conns, duration, proc.pid, baseline)
            results += measure(
                "litellm-stream",
                url,
                {**body, "model": "stream", "stream": True},
                conns,
                duration,
                proc.pid,
                {},
            )
    return results


def targets(
    results: list[Result], rounds: list[list[Result]] | None = None
) -> list[tuple[str, str, bool | None]]:
    """The issue's targets against this run: (target, what was measured, met). `met` is None
    where the run lacks the rows (or, for comparisons alone, where nothing is asked).

    With `rounds` (and `results` their medians), a ratio of two rows is the median of the
    ratios within each round: the two rows of a round were measured a minute or two apart, the
    medians of the two rows may come from different rounds, minutes apart on a machine whose
    speed drifts."""

    def row(name: str, conns: int) -> Result | None:
        return next((r for r in results if r.name == name and r.connections == conns), None)

    checks: list[tuple[str, str, bool | None]] = []

    def check(
        target: str,
        figures: list[float | None],
        unit: str,
        ok: Callable[[float], bool] | None,  # None: shown for comparison, nothing asked
    ) -> None:
        if any(f is None for f in figures):
            checks.append((target, "not measured", None))
            return
        shown = " / ".join(
            f"{f:,.0f}" if f >= 10 or float(f).is_integer() else f"{f:,.2f}"
            for f in figures
            if f is not None
        )
        met = None if ok is None else all(ok(f) for f in figures if f is not None)
        checks.append((target, f"{shown} {unit}", met))

    def rps(name: str, conns: int) -> float | None:
        found = row(name, conns)
        return found.rps if found else None

    def ratios(ours: str, theirs: str) -> list[float | None]:
        """req/s of `ours` over `theirs`, at 16 and at 64 connections (see above for rounds)."""
        if not rounds:
            pairs = [(rps(ours, c), rps(theirs, c)) for c in (16, 64)]
            return [a / b if a and b else None for a, b in pairs]
        out = []
        for c in (16, 64):
            within = []
            for one in rounds:
                a = next((r.rps for r in one if r.name == ours and r.connections == c), None)
                b = next((r.rps for r in one if r.name == theirs and r.connections == c), None)
                within.append(a / b if a and b else None)
            out.append(_median(within) if all(v is not None for v in within) else None)
        return out

    traced1 = row("gateway-traced", 1)
    check(
        "traced, added p50 at 1 connection <= 0.8 ms",
        [traced1.added_p50_ms if traced1 else None],
        "ms",
        lambda f: f <= 0.8,
    )
    check(
        "traced, req/s at 16 and 64 connections >= 1,000",
        [rps("gateway-traced", 16), rps("gateway-traced", 64)],
        "req/s",
        lambda f: f >= 1000,
    )
    check(
        "traced, more than 5x LiteLLM at 16 and 64",
        ratios("gateway-traced", "litellm"),
        "x",
        lambda f: f > 5,
    )
    traced16 = row("gateway-traced", 16)
    check(
        "traced, p99 at 16 connections <= 30 ms",
        [traced16.p99_ms if traced16 else None],
        "ms",
        lambda f: f <= 30,
    )
    check(
        "streaming (traced), streams/s at 16 connections >= 800",
        [rps("gateway-traced-stream", 16)],
        "streams/s",
        lambda f: f >= 800,
    )
    check(
        "streaming (untraced), streams/s at 16 connections >= 800",
        [rps("gateway-stream", 16)],
        "streams/s",
        lambda f: f >= 800,
    )
    per_worker = [
        r.extra.get("largest_process_mb") or r.rss_mb
        for r in results
        if r.name.startswith("gateway") and r.rss_mb
    ]
    check(
        "resident memory per process <= 120 MB (largest)",
        [max(per_worker) if per_worker else None],
        "MB",
        lambda f: f <= 120,
    )
    long_gc = [r.long_gc for r in results if r.name.startswith("gateway") and r.long_gc is not None]
    check(
        "no collection over 50 ms in any gateway row",
        [float(sum(long_gc)) if long_gc else None],
        "collections",
        lambda f: f == 0,
    )
    check(
        "2 workers >= 1.6x one worker at 16 and 64",
        ratios("gateway-2w", "gateway"),
        "x",
        lambda f: f >= 1.6,
    )
    # Not a target: how the gateway's traced route compares with the SDK alone, traced the
    # standard way (OpenInference + the stock batch exporter), in this run.
    check(
        "(reference) traced gateway / traced SDK alone, 16 and 64",
        ratios("gateway-traced", "sdk-raw-traced"),
        "x",
        None,
    )
    checks += scaled_targets(row, rps)
    return checks


# The issue's own measurement of the row `sdk-raw` reproduces (the openai SDK alone on its
# aiohttp transport, with_raw_response, in a bare Starlette app), on the machine its targets
# were set on: req/s at 16 connections, and the latency it adds at 1 connection.
ISSUE_SDK_RAW = {"rps16": 1620.0, "added_p50_ms": 0.65}


def scaled_targets(
    row: Callable[[str, int], Result | None], rps: Callable[[str, int], float | None]
) -> list[tuple[str, str, bool | None]]:
    """The CPU-bound targets, scaled from the issue's machine to this one.

    The speed of this machine against the issue's is this run's `sdk-raw` against the issue's
    figures for the same program: `speed` is its req/s at 16 connections over 1,620, and `slow`
    its added p50 at 1 connection over 0.65 ms. A req/s target is multiplied by `speed`, the p50
    target by `slow`, the p99 target divided by `speed`. The gateway and the reference are both
    Python on one core, both through the openai SDK on aiohttp, measured minutes apart in one
    run, so the ratio cancels what the machine (and its neighbours) do to both; it is as noisy as
    the one `sdk-raw` row it rests on. The absolute targets above stay as the issue states them.
    """
    ref16, ref1 = rps("sdk-raw", 16), row("sdk-raw", 1)
    if ref16 is None or ref1 is None or ref1.added_p50_ms is None or ref1.added_p50_ms <= 0:
        return [
            ("targets scaled to this machine (needs sdk-raw at 1 and 16)", "not measured", None)
        ]
    speed = ref16 / ISSUE_SDK_RAW["rps16"]
    slow = ref1.added_p50_ms / ISSUE_SDK_RAW["added_p50_ms"]
    out: list[tuple[str, str, bool | None]] = [
        (
            "(scale) sdk-raw here / in the issue: req/s at 16, added p50 at 1",
            f"{speed:.2f} x / {slow:.2f} x",
            None,
        )
    ]

    def scaled(target: str, figures: list[float | None], limit: float, at_least: bool) -> None:
        bound = f"{limit:,.0f}" if limit >= 10 else f"{limit:.2f}"
        label = f"{target} {'>=' if at_least else '<='} {bound}"
        known = [f for f in figures if f is not None]
        if len(known) < len(figures):
            out.append((label, "not measured", None))
            return
        shown = " / ".join(f"{f:,.0f}" if f >= 10 else f"{f:.2f}" for f in known)
        met = all((f >= limit) if at_least else (f <= limit) for f in known)
        out.append((label, shown, met))

    traced1, traced16 = row("gateway-traced", 1), row("gateway-traced", 16)
    scaled(
        "scaled: traced, added p50 ms at 1 connection",
        [traced1.added_p50_ms if traced1 else None],
        0.8 * slow,
        at_least=False,
    )
    scaled(
        "scaled: traced, req/s at 16 and 64",
        [rps("gateway-traced", 16), rps("gateway-traced", 64)],
        1000 * speed,
        at_least=True,
    )
    scaled(
        "scaled: traced, p99 ms at 16 connections",
        [traced16.p99_ms if traced16 else None],
        30 / speed,
        at_least=False,
    )
    scaled(
        "scaled: streaming (traced), streams/s at 16",
        [rps("gateway-traced-stream", 16)],
        800 * speed,
        at_least=True,
    )
    scaled(
        "scaled: streaming (untraced), streams/s at 16",
        [rps("gateway-stream", 16)],
        800 * speed,
        at_least=True,
    )
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and v == v]  # not None, not NaN
    return statistics.median(present) if present else None


def median_results(rounds: list[list[Result]]) -> list[Result]:
    """One row per scenario and connection count, in the first round's order: the median over
    the rounds of each rate, latency and CPU figure; the largest memory; collections over 50 ms
    and errors summed. On a shared machine whose speed drifts by tens of percent from minute
    to minute, one run can catch a slow minute; the median of rounds taken one after another
    does not rest on one."""
    if len(rounds) == 1:
        return rounds[0]
    by_row: dict[tuple[str, int], list[Result]] = {}
    for one in rounds:
        for r in one:
            by_row.setdefault((r.name, r.connections), []).append(r)
    out = []
    for (name, conns), rows in by_row.items():
        largest = [r.extra.get("largest_process_mb") for r in rows]
        long_gc = [r.long_gc for r in rows if r.long_gc is not None]
        result = Result(
            name,
            conns,
            _median([r.rps for r in rows]) or 0.0,
            _median([r.p50_ms for r in rows]) or float("nan"),
            _median([r.p90_ms for r in rows]) or float("nan"),
            _median([r.p99_ms for r in rows]) or float("nan"),
            sum(r.errors for r in rows),
            rss_mb=max((r.rss_mb for r in rows if r.rss_mb), default=None),
            added_p50_ms=_median([r.added_p50_ms for r in rows]),
            cpu_us=_median([r.cpu_us for r in rows]),
            long_gc=sum(long_gc) if long_gc else None,
        )
        if any(v is not None for v in largest):
            result.extra["largest_process_mb"] = max(v for v in largest if v is not None)
        result.extra["rps_by_round"] = [round(r.rps) for r in rows]
        out.append(result)
    return out


def report(
    results: list[Result], rounds: list[list[Result]] | None = None, *, save: bool = True
) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    record: dict = {"when": stamp, "cpus": os.cpu_count(), "results": [asdict(r) for r in results]}
    if rounds:
        record["rounds"] = [[asdict(r) for r in one] for one in rounds]
    if save:
        (RESULTS / "latest.json").write_text(json.dumps(record, indent=2))
    if rounds:
        print(f"\nmedians of {len(rounds)} rounds (req/s of each round in the last column)")
    print(
        "\n| scenario | conns | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | RSS MB "
        "| CPU µs/req | GC > 50 ms | errors |" + (" req/s by round |" if rounds else "")
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if rounds else ""))
    for r in results:
        added = f"{r.added_p50_ms:.2f}" if r.added_p50_ms is not None else "-"
        rss = f"{r.rss_mb:.0f}" if r.rss_mb else "-"
        cpu = f"{r.cpu_us:,.0f}" if r.cpu_us else "-"
        long_gc = "-" if r.long_gc is None else str(r.long_gc)
        by_round = " / ".join(f"{v:,}" for v in r.extra.get("rps_by_round", []))
        print(
            f"| {r.name} | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | "
            f"{r.p99_ms:.2f} | {added} | {rss} | {cpu} | {long_gc} | {r.errors} |"
            + (f" {by_round} |" if rounds else "")
        )
    print("\n| the issue's target | this run | met |\n|---|---|---|")
    for target, measured, met in targets(results, rounds):
        print(f"| {target} | {measured} | {'-' if met is None else 'yes' if met else 'no'} |")
    if not save:  # a saved run, reported again: its chart was drawn when it ran
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib not installed: no chart)")
        return
    names = [n for n in dict.fromkeys(r.name for r in results) if n != "upstream"]
    conns = sorted({r.connections for r in results})
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / max(1, len(conns))
    for i, c in enumerate(conns):
        values = [
            next((r.rps for r in results if r.name == n and r.connections == c), 0) for n in names
        ]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=f"{c} conns")
    ax.set_xticks([x + width * (len(conns) - 1) / 2 for x in range(len(names))], names, rotation=20)
    ax.set_ylabel("requests/s (higher is better)")
    ax.set_title(f"llm-router benchmark, {os.cpu_count()} cores, {stamp}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "latest.png", dpi=110)
    print(f"\nchart: {RESULTS / 'latest.png'}")


if __name__ == "__main__":
    main()
