"""The web console end to end: headless Chromium (Debian's package) against a running gateway.

One gateway on the simulated provider, with an admin key and a nested route; one browser for
the module. Each test drives the page as a person would and leaves a screenshot under
test-artifacts/console/. Every test also asserts that the page logged no error or warning.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import parse_config
from app.factory import create_app
from tests.fakes.server import serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--window-size=1440,1000",
]
ADMIN_KEY = "console-admin-key"
# Scores above cost_threshold's 0.5 with the heuristic scorer: goes to `strong`.
HARD = (
    "Prove step by step that the algorithm is correct, analyze its complexity, derive the "
    "recurrence and optimize the implementation with a detailed explanation. "
) * 3

CONFIG = f"""
server:
  admin_key: {ADMIN_KEY}
providers:
  sim: {{type: simulated, latency_ms: {{mean: 30, stddev: 10}}, seed: 7}}
  broken: {{type: simulated, error_rate: 1.0}}
models:
  fast: {{provider: sim, model: fast-1, input_price: 0.15, output_price: 0.6}}
  strong: {{provider: sim, model: strong-1, input_price: 2.5, output_price: 10}}
  flaky: {{provider: broken, model: flaky-1}}
routes:
  backup:
    failover:
      chain: [flaky, strong]
      circuit_breaker: {{failures: 2, cooldown_s: 60}}
  smart:
    classify:
      rules: {{code: ["def ", "function"]}}
      branches:
        code: backup
      otherwise:
        ab_split:
          variants:
            a:
              weight: 70
              to:
                cost_threshold: {{scorer: heuristic, threshold: 0.5, below: fast, above: strong}}
            b: {{weight: 30, to: fast}}
"""


def _browser_or_skip() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    reason = f"{', '.join(missing)} absent: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(f"CI must install the browser (.ci/run): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with serve_app(create_app(parse_config(CONFIG, env={}))) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(10)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def console(browser: Any, gateway: str) -> Any:
    """The console, signed in with the admin key through its form."""
    from selenium.webdriver.common.by import By

    browser.get(gateway + "/console?refresh=0.5")
    wait_for(lambda: browser.find_element(By.ID, "login").is_displayed(), "the sign-in form")
    assert not browser.find_element(By.ID, "app").is_displayed()
    browser.find_element(By.ID, "admin-key").send_keys("not-the-key")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(
        lambda: "not the admin key" in browser.find_element(By.ID, "login-error").text,
        "the wrong key refused",
    )
    browser.find_element(By.ID, "admin-key").send_keys(ADMIN_KEY)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(lambda: browser.find_element(By.ID, "app").is_displayed(), "the console")
    return browser


def wait_for(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # an element not drawn yet, or redrawn under us
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def unstale(read: Callable[[], Any], timeout: float = 10.0) -> Any:
    """`read()`, read again whole when the console redrew under it (each refresh replaces the
    elements: a reference taken before it is stale after it)."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def assert_no_console_errors(driver: Any) -> None:
    bad = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert bad == [], bad


class Traffic:
    """Requests sent from a thread until stopped (at most `limit_s`), as a load would."""

    def __init__(self, base: str, route: str, prompts: list[str], limit_s: float = 15.0) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._args = (base, route, prompts, limit_s)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        base, route, prompts, limit_s = self._args
        deadline = time.monotonic() + limit_s
        with httpx.Client(base_url=base, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                prompt = prompts[self.sent % len(prompts)]
                messages = [{"role": "user", "content": prompt}]
                client.post("/v1/chat", json={"route": route, "messages": messages})
                self.sent += 1
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def test_the_page_shows_nothing_before_sign_in(browser: Any, gateway: str) -> None:
    from selenium.webdriver.common.by import By

    html = httpx.get(gateway + "/console").text
    assert "smart" not in html and "flaky" not in html  # nothing of the config in the shell
    browser.get(gateway + "/console")
    wait_for(lambda: browser.find_element(By.ID, "login").is_displayed(), "the sign-in form")
    label = browser.find_element(By.CSS_SELECTOR, "label[for=admin-key]")
    assert label.text == "Admin key"
    assert browser.find_element(By.ID, "route-trees").text == ""
    shot(browser, "0-sign-in")
    assert_no_console_errors(browser)


def test_route_tree_renders_a_nested_config(console: Any) -> None:
    from selenium.webdriver.common.by import By

    smart = ".route[data-route=smart] .tree"
    wait_for(lambda: console.find_element(By.CSS_SELECTOR, smart), "the smart route's tree")

    def read() -> tuple[str, str, set[str], str]:
        tree = console.find_element(By.CSS_SELECTOR, smart)
        ref = tree.find_element(
            By.CSS_SELECTOR, "[data-path='routes.smart.classify.branches.code']"
        )
        targets = {
            e.get_attribute("data-target")
            for e in tree.find_elements(By.CSS_SELECTOR, ".node.target")
        }
        return tree.text, ref.text, targets, tree.get_attribute("aria-label")

    text, ref_text, targets, label = unstale(read)
    for piece in ("classify", "by rules", "code", "otherwise", "ab_split", "a · 70%", "b · 30%"):
        assert piece in text, piece
    assert "cost_threshold" in text and "below 0.5" in text and "at or above 0.5" in text
    # The branch that names another route shows that route's failover chain beneath it.
    assert "backup" in ref_text and "#1" in ref_text and "flaky" in ref_text
    assert "#2" in ref_text and "strong" in ref_text
    assert targets == {"fast", "strong", "flaky"}
    assert label == "Route smart"
    shot(console, "1-routes")
    assert_no_console_errors(console)


def _rps_chart(driver: Any) -> tuple[str, float]:
    from selenium.webdriver.common.by import By

    def read() -> tuple[str, float]:
        svg = driver.find_element(By.CSS_SELECTOR, "#chart-rps svg")
        line = svg.find_element(By.CSS_SELECTOR, "polyline[data-series=requests]")
        return line.get_attribute("points"), float(svg.get_attribute("data-peak"))

    return unstale(read)


def test_charts_move_while_traffic_runs(console: Any, gateway: str) -> None:
    from selenium.webdriver.common.by import By

    before, _ = wait_for(lambda: _rps_chart(console), "the requests chart")
    with Traffic(gateway, "smart", ["hello there", HARD]):  # never code: that goes to backup
        wait_for(lambda: _rps_chart(console)[1] > 0, "requests on the chart")
        moving = _rps_chart(console)[0]
        wait_for(lambda: _rps_chart(console)[0] != moving, "the chart to move again")
    assert _rps_chart(console)[0] != before
    tokens = console.find_element(By.CSS_SELECTOR, "#chart-tokens")
    assert "sim/fast-1" in tokens.text  # a line per provider/model
    title = console.find_element(By.CSS_SELECTOR, "#chart-latency svg title")
    assert "p95" in title.get_attribute("textContent")
    assert "smart" in console.find_element(By.ID, "recent-table").text
    perf = wait_for(
        lambda: (
            "fast-1" in console.find_element(By.ID, "perf-table").text
            and console.find_element(By.ID, "perf-table")
        ),
        "the performance table",
    )
    assert "strong-1" in perf.text
    shot(console, "2-traffic")
    assert_no_console_errors(console)


def test_a_failing_provider_shows_its_breaker_opening(console: Any, gateway: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    flaky = "[data-route=backup] .node.target[data-target=flaky]"
    wait_for(lambda: console.find_element(By.CSS_SELECTOR, flaky), "the flaky target")
    assert console.find_elements(By.CSS_SELECTOR, f"{flaky} [data-breaker=open]") == []
    with httpx.Client(base_url=gateway, timeout=10) as client:
        for _ in range(3):
            body = {"route": "backup", "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/v1/chat", json=body).status_code == 200  # strong answers
    badge = wait_for(
        lambda: console.find_element(By.CSS_SELECTOR, f"{flaky} [data-breaker=open]"),
        "the breaker to show open",
    )
    assert badge.text == "breaker open"
    node = console.find_element(By.CSS_SELECTOR, flaky)
    assert "100% errors" in node.text
    strong = console.find_element(By.CSS_SELECTOR, "[data-route=backup] [data-target=strong]")
    assert "breaker closed" in strong.text
    # The recent requests filtered to the route: each shows the failed attempt before strong.
    route_filter = Select(console.find_element(By.ID, "filter-route"))
    route_filter.select_by_value("backup")
    wait_for(
        lambda: "flaky server_error" in console.find_element(By.ID, "recent-table").text,
        "backup's requests with their failed attempts",
    )
    rows = console.find_elements(By.CSS_SELECTOR, "#recent-table tbody tr")
    assert all("backup" in row.text for row in rows)
    route_filter.select_by_value("")
    shot(console, "3-breaker-open")
    assert_no_console_errors(console)


def test_a_dry_run_shows_its_decisions(console: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    wait_for(
        lambda: console.find_element(By.CSS_SELECTOR, "#try-route option[value=smart]"),
        "the routes to try",
    )
    Select(console.find_element(By.ID, "try-route")).select_by_value("smart")
    prompt = console.find_element(By.ID, "try-prompt")
    prompt.clear()
    prompt.send_keys("def add(a, b): return a + b  # why is this slow?")
    assert console.find_element(By.ID, "try-dry-run").is_selected()
    console.find_element(By.ID, "try-send").click()
    decisions = wait_for(
        lambda: console.find_element(By.ID, "try-decisions"), "the dry run's decisions"
    )
    text = decisions.text
    assert "classify at routes.smart.classify → code" in text
    assert "failover at routes.backup.failover → strong" in text  # flaky's breaker is open
    result = console.find_element(By.ID, "try-result").text
    assert "Dry run → strong" in result and "estimated $" in result
    console.execute_script("document.getElementById('try').scrollIntoView()")
    shot(console, "4-dry-run")
    assert_no_console_errors(console)


def test_the_readme_screenshot(console: Any, gateway: str) -> None:
    """A whole-page picture after mixed traffic; copied to docs/console.png when asked."""
    with Traffic(gateway, "smart", ["hello", "def f(): pass", HARD], limit_s=2.5):
        time.sleep(2.5)
    time.sleep(1.2)
    console.execute_script("window.scrollTo(0, 0)")
    console.set_window_size(1440, 1700)
    try:
        shot(console, "5-overview")
    finally:
        console.set_window_size(1440, 1000)
    if os.environ.get("LLM_ROUTER_UPDATE_SCREENSHOT"):
        shutil.copy(
            ARTIFACTS / "5-overview.png", Path(__file__).parent.parent / "docs" / "console.png"
        )
    assert_no_console_errors(console)
