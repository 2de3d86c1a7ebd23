"""The console's data, without a browser: the recent-request buffer, the traffic timeline, and
the `/console` endpoints behind the admin key (the browser tests: test_console_browser.py)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import httpx
import pytest

from app.recent import RecentRequests, RequestRecord
from app.timeline import Timeline

ADMIN = {"authorization": "Bearer the-admin-key"}

CONFIG = """
server:
  admin_key: the-admin-key
  api_keys: [caller-key]
tracing: {capture_content: %s}
providers:
  sim: {type: simulated}
  broken: {type: simulated, error_rate: 1.0}
models:
  fast: {provider: sim, model: fast-1, input_price: 1, output_price: 2}
  flaky: {provider: broken, model: flaky-1}
routes:
  backup:
    failover: {chain: [flaky, fast]}
  smart:
    classify:
      rules: {code: ["def "]}
      branches: {code: backup}
      otherwise: fast
  dead: flaky
"""
CALLER = {"authorization": "Bearer caller-key"}


class Clock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(at: float, route: str = "r", ok: bool = True, **fields: object) -> RequestRecord:
    return RequestRecord(
        at=at, route=route, status="200" if ok else "502", ok=ok, latency_ms=5.0, **fields
    )  # type: ignore[arg-type]


# ---- the recent-request buffer -----------------------------------------------------------


def test_recent_requests_are_bounded_newest_first_and_filtered() -> None:
    recent = RecentRequests(size=50)
    for i in range(120):
        provider = "a" if i % 2 else "b"
        attempts = [{"target": "t", "provider": provider, "model": "m", "ok": True}]
        recent.add(
            record(i, route=f"r{i % 3}", ok=i % 5 != 0, provider=provider, attempts=attempts)
        )
    assert len(recent) == 50
    latest = recent.latest(limit=10)
    assert [r.at for r in latest] == list(range(119, 109, -1))
    assert all(r.route == "r1" for r in recent.latest(route="r1"))
    assert all(r.outcome == "error" for r in recent.latest(outcome="error"))
    assert len(recent.latest(outcome="error")) == 10  # every fifth of the last 50
    assert all(r.provider == "a" for r in recent.latest(provider="a"))
    assert recent.facets() == {"routes": ["r0", "r1", "r2"], "providers": ["a", "b"]}


def test_node_traffic_shares_and_error_rates_over_the_window() -> None:
    clock = Clock()
    recent = RecentRequests(clock=clock)
    failover = {"policy": "failover", "at": "routes.r.failover", "outcome": "good"}
    failed = {"target": "bad", "provider": "p", "model": "m", "error": "server_error"}
    answered = {"target": "good", "provider": "p", "model": "m", "ok": True}
    recent.add(record(clock.now - 1000, decisions=[failover], attempts=[answered]))  # too old
    for _ in range(3):
        recent.add(record(clock.now, decisions=[failover], attempts=[failed, answered]))
    recent.add(record(clock.now, decisions=[failover], attempts=[answered]))
    recent.add(record(clock.now, ok=False, decisions=[failover], attempts=[failed, failed]))
    traffic = recent.node_traffic(window_s=300)["r"]
    assert traffic["requests"] == 5
    nodes = traffic["nodes"]
    assert nodes["routes.r.failover"] == {
        "requests": 5,
        "share": 1.0,
        "errors": 1,
        "error_rate": 0.2,
    }
    assert nodes["bad"] == {"requests": 4, "share": 0.8, "errors": 4, "error_rate": 1.0}
    assert nodes["good"] == {"requests": 4, "share": 0.8, "errors": 0, "error_rate": 0.0}


# ---- the timeline ------------------------------------------------------------------------


def test_timeline_buckets_percentiles_and_models() -> None:
    clock = Clock(1000.0)
    timeline = Timeline(span_s=20, bucket_s=2, clock=clock, seed=1)
    for latency in range(1, 101):
        timeline.add(float(latency), latency % 10 != 0, "p", "m", tokens=3, cost_usd=0.5)
    timeline.add(7.0, True, "q", "n", tokens=10)
    report = timeline.report()
    assert report["rps"][-1] == 0  # the bucket still filling is left out
    clock.now += 2
    report = timeline.report()
    assert len(report["t"]) == 10 and report["t"][-1] == 1000.0
    assert report["rps"][-1] == 50.5 and report["errors_per_s"][-1] == 5.0
    assert report["p50_ms"][-1] == 50.0 and report["p95_ms"][-1] == 95.0
    assert report["p50_ms"][0] is None  # no traffic then
    by_model = {(m["provider"], m["model"]): m for m in report["models"]}
    assert by_model[("p", "m")]["tokens"][-1] == 300
    assert by_model[("p", "m")]["cost_usd"][-1] == pytest.approx(50.0)
    assert by_model[("q", "n")]["tokens"][-1] == 10


def test_timeline_forgets_what_left_the_window_and_bounds_its_series() -> None:
    clock = Clock(1000.0)
    timeline = Timeline(span_s=20, bucket_s=2, max_series=3, sample_size=8, clock=clock)
    for i in range(10):
        timeline.add(1.0, True, "p", f"model-{i}", tokens=1)
    clock.now += 2
    models = {m["model"] for m in timeline.report()["models"]}
    assert models == {"model-0", "model-1", "model-2", "(other)"}
    clock.now += 30
    timeline.add(1.0, True)  # a new bucket opens; the old ones are dropped
    assert len(timeline._buckets) == 1
    clock.now += 2
    report = timeline.report()
    assert sum(report["rps"]) == 0.5 and report["models"] == []


# ---- the endpoints -----------------------------------------------------------------------


@pytest.fixture
def gateway(serve_gateway: Callable[..., str]) -> Callable[[bool], str]:
    return lambda capture=True: serve_gateway(CONFIG % str(capture).lower())


def test_the_page_and_assets_load_without_the_key_and_say_nothing(gateway) -> None:
    base = gateway()
    page = httpx.get(base + "/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for secret in ("smart", "backup", "flaky", "fast-1", "the-admin-key"):
        assert secret not in page.text
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = httpx.get(f"{base}/console/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert httpx.get(base + "/console/assets/..%2Fconsole.py").status_code == 404
    assert httpx.get(base + "/console/assets/index.html").status_code == 404
    # No asset names another host: everything is served from here.
    for name in ("index.html", "console.js", "console.css"):
        text = resources.files("routers").joinpath("console_static", name).read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text


def test_the_api_takes_the_admin_key_only(gateway) -> None:
    base = gateway()
    for path in ("/console/api/overview", "/console/api/traffic", "/console/api/requests"):
        assert httpx.get(base + path).status_code == 401
        assert httpx.get(base + path, headers=CALLER).status_code == 401
        assert httpx.get(base + path, headers=ADMIN).status_code == 200
    try_it = {"route": "smart", "prompt": "hi"}
    assert httpx.post(base + "/console/api/try", json=try_it, headers=CALLER).status_code == 401
    assert httpx.get(base + "/console/session").json() == {
        "admin_key_required": True,
        "authorized": False,
        "disabled": False,
    }
    assert httpx.get(base + "/console/session", headers=ADMIN).json()["authorized"] is True


def test_without_an_admin_key_the_console_is_off_while_callers_need_keys(
    serve_gateway: Callable[..., str],
) -> None:
    base = serve_gateway(CONFIG.replace("  admin_key: the-admin-key\n", "") % "true")
    assert httpx.get(base + "/console/api/overview").status_code == 403
    assert httpx.get(base + "/console/session").json()["disabled"] is True
    open_base = serve_gateway("providers: {sim: {type: simulated}}\nroutes: {r: sim/m}\n")
    assert httpx.get(open_base + "/console/api/overview").status_code == 200  # local use


def test_requests_are_kept_with_their_path_and_the_prompt_only_when_captured(gateway) -> None:
    for capture in (True, False):
        base = gateway(capture)
        with httpx.Client(base_url=base, headers=CALLER) as client:
            body = {"route": "smart", "messages": [{"role": "user", "content": "def f(): pass"}]}
            assert client.post("/v1/chat", json=body).status_code == 200
            body = {"route": "dead", "messages": [{"role": "user", "content": "hello"}]}
            assert client.post("/v1/chat", json=body).status_code == 502
            dry = {
                "route": "smart",
                "dry_run": True,
                "messages": [{"role": "user", "content": "x"}],
            }
            assert client.post("/v1/chat", json=dry).status_code == 200
        data = httpx.get(base + "/console/api/requests", headers=ADMIN).json()
        failed, served = data["requests"]  # newest first; the dry run is not traffic
        assert failed["route"] == "dead" and failed["outcome"] == "error"
        assert failed["status"] == "502" and failed["target"] is None
        assert served["route"] == "smart" and served["target"] == "fast"
        assert [d["policy"] for d in served["decisions"]] == ["classify", "failover"]
        assert [a["target"] for a in served["attempts"]] == ["flaky", "fast"]
        assert served["cost_usd"] > 0 and served["tokens"]["output"] > 0
        assert served["prompt"] == ("def f(): pass" if capture else None)
        errors = httpx.get(base + "/console/api/requests?outcome=error", headers=ADMIN).json()
        assert [r["route"] for r in errors["requests"]] == ["dead"]
        by_provider = httpx.get(base + "/console/api/requests?provider=sim", headers=ADMIN)
        assert [r["route"] for r in by_provider.json()["requests"]] == ["smart"]

        overview = httpx.get(base + "/console/api/overview", headers=ADMIN).json()
        smart = next(r for r in overview["routes"] if r["name"] == "smart")
        assert smart["tree"]["policy"] == "classify"
        assert smart["traffic"]["requests"] == 1
        assert smart["traffic"]["nodes"]["flaky"]["error_rate"] == 1.0
        assert overview["capture_content"] is capture
        assert {m["model"] for m in overview["stats"]["models"]} == {"fast-1", "flaky-1"}


def test_try_it_shows_decisions_for_a_dry_run_and_for_a_failure(gateway) -> None:
    base = gateway()
    with httpx.Client(base_url=base, headers=ADMIN) as client:
        dry = client.post("/console/api/try", json={"route": "smart", "prompt": "def g(): 1"})
        assert dry.status_code == 200
        body = dry.json()
        assert body["dry_run"] is True and body["target"] == "flaky" and body["message"] is None
        assert [d["outcome"] for d in body["decisions"]] == ["code", "flaky"]
        assert body["estimated_cost_usd"] is not None and body["attempts"] == []

        real = client.post(
            "/console/api/try", json={"route": "smart", "prompt": "hello", "dry_run": False}
        ).json()
        assert real["target"] == "fast" and real["message"]

        failed = client.post(
            "/console/api/try", json={"route": "dead", "prompt": "hello", "dry_run": False}
        )
        assert failed.status_code == 502
        assert failed.json()["error"]["type"] == "upstream_error"
        assert [a["target"] for a in failed.json()["attempts"]] == ["flaky"]
        unknown = client.post("/console/api/try", json={"route": "nope", "prompt": "hi"})
        assert unknown.status_code == 404
        kept = client.get("/console/api/requests").json()["requests"]
    assert [r["route"] for r in kept] == ["dead", "smart"]  # real sends only, not dry runs
