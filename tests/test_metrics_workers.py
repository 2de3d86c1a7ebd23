"""`llm-router serve --workers 2` as a real process: every scrape adds up both workers' counts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.test_cli_serve import clean_env, start, stop
from tests.test_metrics import scrape, total, value

CONFIG = """
providers:
  sim: {type: simulated, latency_ms: 20}
models:
  m: {provider: sim, model: sim-m, input_price: 1.0, output_price: 1.0}
routes:
  default: m
"""

REQUESTS = 40


def fresh(base: str, path: str, **kwargs) -> httpx.Response:
    # A new connection each time, so the kernel hands requests to either worker.
    with httpx.Client(base_url=base) as client:
        return client.request(kwargs.pop("method", "GET"), path, **kwargs)


def chat(base: str) -> dict:
    response = fresh(
        base,
        "/v1/chat",
        method="POST",
        json={"messages": [{"role": "user", "content": "count me"}]},
    )
    assert response.status_code == 200
    return response.json()


def wait_for_both_workers(base: str) -> None:
    # `start` returned when one worker answered; the other may still be importing.
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2:
        assert time.monotonic() < deadline, "the second worker never answered"
        with ThreadPoolExecutor(4) as pool:
            pids |= set(pool.map(lambda _: fresh(base, "/v1/stats").json()["pid"], range(8)))


def test_two_workers_one_sum(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale")  # from an earlier run: removed
    env = {**clean_env(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    proc, base = start(["--config", str(config), "--workers", "2"], env)
    try:
        wait_for_both_workers(base)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: chat(base), range(REQUESTS)))
        tokens = sum(a["usage"]["output_tokens"] for a in answers)
        labels = {"route": "default", "provider": "sim", "model": "sim-m"}
        for _ in range(6):  # whichever worker answers the scrape, it sees every request
            samples = scrape(base)
            assert value(samples, "llm_router_requests_total", **labels, status="200") == REQUESTS
            assert total(samples, "llm_router_tokens_total", direction="output") == tokens
            assert value(samples, "llm_router_request_duration_seconds_count", **labels) == REQUESTS
        # And each worker's own share is a part of it: /v1/stats is per process.
        shares: dict[int, int] = {}
        for _ in range(200):
            if len(shares) == 2:
                break
            report = fresh(base, "/v1/stats").json()
            shares[report["pid"]] = sum(m["since_start"]["requests"] for m in report["models"])
        assert len(shares) == 2 and sum(shares.values()) == REQUESTS
        assert not (metrics_dir / "counter_99999.db").exists()
    finally:
        stop(proc)
