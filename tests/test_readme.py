"""The README's two commands, run as a newcomer would: in a fresh copy with no virtual environment.

`make test` is what CI itself runs on a clean clone, so here it runs on a small part of the suite
(running the whole suite inside the suite would recurse); `make serve` is started for real.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "the README opens with a shell block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands() -> None:
    assert readme_commands() == ["make serve", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("fresh") / "llm-router"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    assert not (dest / ".venv").exists()
    return dest


def newcomer_env() -> dict[str, str]:
    keep = (
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_CONFIG_FILE",
        "PYENV_VERSION",
        "PYENV_ROOT",
        "SSL_CERT_FILE",
    )
    env = {k: os.environ[k] for k in keep if k in os.environ}
    # Drop this suite's own venv from PATH so `make` finds the machine's python3.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT / ".venv"))
    )
    return env


def test_make_serve_in_a_fresh_copy(fresh_copy: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["make", "serve", f"ARGS=--port {port}"],
        cwd=fresh_copy,
        env=newcomer_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # the first run installs every dependency
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "make serve did not become ready"
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        reply = httpx.post(
            base + "/v1/chat", json={"messages": [{"role": "user", "content": "hello"}]}
        ).json()
        assert reply["provider"] == "sim" and reply["message"]["content"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "serving the built-in simulated provider" in out
    assert (fresh_copy / ".venv" / "bin" / "llm-router").exists()


def test_make_test_in_the_same_fresh_copy(fresh_copy: Path) -> None:
    result = subprocess.run(
        ["make", "test", "PYTEST_ARGS=-q -p no:cacheprovider tests/test_config.py"],
        cwd=fresh_copy,
        env=newcomer_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)
