"""A small application with llm-router as its sidecar: it asks the gateway, never a provider.

It knows one address (ROUTER_URL, the sidecar on localhost) and one endpoint, `POST /v1/chat`.
Standard library only, so that any `python` image runs it:

    python app.py                 # ask every INTERVAL_S seconds until stopped
    python app.py --once "Hello"  # ask once and exit (non-zero when the gateway failed)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

PROMPTS = [
    "Write a haiku about rain",
    "Compare a river and a road in two sentences",
    "Name three uses of copper",
]


def ask(base: str, prompt: str, *, route: str = "default", key: str = "") -> dict:
    body = json.dumps({"route": route, "messages": [{"role": "user", "content": prompt}]})
    request = urllib.request.Request(
        f"{base}/v1/chat",
        data=body.encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    if key:
        request.add_header("authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def wait_until_ready(base: str, deadline_s: float) -> None:
    """The sidecar starts beside the app: wait for its /readyz rather than fail the first ask."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the gateway at {base} was not ready within {deadline_s:g}s")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", metavar="PROMPT", help="ask once and exit")
    parser.add_argument("--route", default=os.environ.get("ROUTER_ROUTE", "default"))
    args = parser.parse_args(argv)
    base = os.environ.get("ROUTER_URL", "http://127.0.0.1:8080").rstrip("/")
    key = os.environ.get("ROUTER_API_KEY", "")
    interval = float(os.environ.get("INTERVAL_S", "5"))
    wait_until_ready(base, float(os.environ.get("READY_TIMEOUT_S", "60")))

    prompts = [args.once] if args.once else PROMPTS
    n = 0
    while True:
        prompt = prompts[n % len(prompts)]
        try:
            answer = ask(base, prompt, route=args.route, key=key)
        except urllib.error.HTTPError as error:
            detail = json.loads(error.read() or b"{}").get("error", {})
            print(f"gateway error {error.code}: {detail.get('message')}", flush=True)
            if args.once:
                return 1
        else:
            print(
                f"{answer['provider']}/{answer['model']} in {answer['latency_ms']} ms, "
                f"${answer['cost_usd']:.6f}, trace {answer.get('trace_id')}: "
                f"{answer['message']['content']}",
                flush=True,
            )
            if args.once:
                return 0
        n += 1
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
