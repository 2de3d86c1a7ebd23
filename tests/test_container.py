"""The Dockerfile: hadolint-clean, the shape the issue asks for, and its install steps run for real.

No Docker engine runs here, so the build stage is replayed on this machine: its COPY lines copy
the same files, its RUN lines run unchanged in a shell, with every container path moved under a
temporary directory. What comes out must be a virtual environment whose `llm-router` works.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
CONFIG_PATH = "/etc/llm-router/router.yaml"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, rest)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages(text: str = DOCKERFILE.read_text()) -> list[Stage]:
    args: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "ARG" and not found:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(image, name))
        else:
            found[-1].instructions.append((keyword, rest))
    return found


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for pair in shlex.split(rest):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


# ---- lint and shape ----------------------------------------------------------------------


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install llm-router\n")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(careless)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3042" in result.stdout


def test_the_image_is_multi_stage_pinned_unprivileged_and_health_checked() -> None:
    build, final = stages()
    for stage in (build, final):
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", stage.image), stage.image
    assert build.name == "build"
    # The final stage installs nothing: it takes the built environment and the config.
    assert not any("pip" in run or "apt" in run for run in final.all("RUN"))
    copies = final.all("COPY")
    assert "--from=build /opt/llm-router /opt/llm-router" in copies
    assert f"deploy/router.yaml {CONFIG_PATH}" in copies
    env = env_of(final)
    assert env["ROUTER_CONFIG"] == CONFIG_PATH
    assert env["PATH"].startswith("/opt/llm-router/bin:")
    user = final.all("USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    health = final.all("HEALTHCHECK")[0]
    assert "/healthz" in health and "curl" not in health
    assert json.loads(final.all("ENTRYPOINT")[0]) == [
        "llm-router",
        "serve",
        "--host",
        "0.0.0.0",
    ]
    assert final.all("EXPOSE") == [env["ROUTER_PORT"]]


def test_dockerignore_lets_in_exactly_what_the_image_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "deny everything, then name what the build needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    needed = set()
    for stage in stages():
        for rest in stage.all("COPY"):
            if rest.startswith("--from"):
                continue
            *sources, _ = rest.split()
            needed |= {source.rstrip("/") for source in sources}
    assert needed == allowed
    for source in needed:
        assert (ROOT / source).exists(), source


# ---- the build stage, replayed -------------------------------------------------------------


def overlay_of_installed_dependencies(tmp: Path) -> Path:
    """This test environment's installed dependencies, minus llm-router and the packaging tools.

    Put on PYTHONPATH, pip finds every dependency already satisfied and installs only the
    package itself, which keeps this test to seconds; CI (CI set) installs everything afresh.
    """
    overlay = tmp / "deps"
    overlay.mkdir()
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    skip = re.compile(r"^(llm_router|__editable__|pip|setuptools|wheel|_distutils_hack|.*\.pth$)")
    for entry in site.iterdir():
        if not skip.match(entry.name):
            (overlay / entry.name).symlink_to(entry)
    return overlay


def replay_build_stage(stage: Stage, root: Path, env: dict[str, str]) -> dict[str, str]:
    """Run the stage's COPY and RUN lines with container paths under `root`; returns its ENV."""

    def mapped(path: str) -> Path:
        return root / path.lstrip("/")

    workdir = root
    stage_env: dict[str, str] = {}
    for keyword, rest in stage.instructions:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                stage_env[name] = str(mapped(value)) if value.startswith("/") else value
        elif keyword == "WORKDIR":
            workdir = mapped(rest)
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = rest.split()
            target = mapped(dest) if dest.startswith("/") else workdir / dest
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif keyword == "RUN":
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", rest],
                cwd=workdir,
                env={**env, **stage_env},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"
    return stage_env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The build stage replayed: (root standing for the image's /, environment to run in)."""
    tmp = tmp_path_factory.mktemp("image")
    root = tmp / "root"
    root.mkdir()
    base_python = Path(getattr(sys, "_base_executable", sys.executable))
    bin_dir = tmp / "bin"  # `python` on PATH is the base interpreter, as in the image
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(base_python)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(tmp)),  # the user's pip configuration applies
        "LANG": "C.UTF-8",
    }
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if name in os.environ:
            env[name] = os.environ[name]
    if not os.environ.get("CI"):
        env["PYTHONPATH"] = str(overlay_of_installed_dependencies(tmp))
    build = stages()[0]
    stage_env = replay_build_stage(build, root, env)
    venv = Path(stage_env["VIRTUAL_ENV"])
    run_env = {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    # The final stage's config, where the image puts it.
    config = root / CONFIG_PATH.lstrip("/")
    config.parent.mkdir(parents=True)
    shutil.copy2(ROOT / "deploy" / "router.yaml", config)
    return root, run_env


def test_install_steps_give_a_working_llm_router(built: tuple[Path, dict[str, str]]) -> None:
    root, env = built
    venv = root / "opt" / "llm-router"
    assert (venv / "bin" / "llm-router").exists()
    assert not (venv / "bin" / "pip").exists(), "pip is removed from the runtime environment"

    version = subprocess.run(
        ["llm-router", "--version"], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("llm-router ")

    # The installed copy is what runs: the package is in the environment, and every command here
    # runs outside this source tree with nothing of it on the path.
    for package in ("app", "routers", "providers", "policies"):
        assert list(venv.glob(f"lib/python*/site-packages/{package}/__init__.py")), package

    config = root / CONFIG_PATH.lstrip("/")
    validate = subprocess.run(
        ["llm-router", "validate", str(config)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validate.returncode == 0, validate.stderr
    assert "ok (1 providers, 2 models, routes: default)" in validate.stdout


def healthcheck_command() -> list[str]:
    health = stages()[-1].all("HEALTHCHECK")[0]
    return json.loads(health[health.index("CMD") + 3 :].strip())


def test_healthcheck_passes_on_a_live_gateway_and_fails_without_one(
    built: tuple[Path, dict[str, str]], serve_gateway: Callable[..., str]
) -> None:
    _, env = built
    base = serve_gateway((ROOT / "deploy" / "router.yaml").read_text())
    port = base.rsplit(":", 1)[1]
    command = healthcheck_command()
    assert command[0] == "python"
    live = subprocess.run(
        command, env={**env, "ROUTER_PORT": port}, capture_output=True, timeout=30
    )
    assert live.returncode == 0, live.stderr

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = str(sock.getsockname()[1])
    dead = subprocess.run(
        command, env={**env, "ROUTER_PORT": closed}, capture_output=True, timeout=30
    )
    assert dead.returncode != 0
