"""`llm-router`: serve, validate, explain, --version."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from app import __version__
from app.config import ConfigError, RouterConfig, load_config, parse_config

CONFIG_ENV = "ROUTER_CONFIG"


def zero_config(env: Mapping[str, str]) -> tuple[str, str]:
    """A config from the provider keys in the environment, or the simulated provider.

    Returns (YAML text, a sentence saying what it serves).
    """
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    if env.get("OPENAI_API_KEY"):
        providers["openai"] = {"type": "openai", "api_key": "${OPENAI_API_KEY}"}
        models["fast"] = {"provider": "openai", "model": "gpt-4o-mini"}
        models["smart"] = {"provider": "openai", "model": "gpt-4o"}
    if env.get("ANTHROPIC_API_KEY"):
        providers["anthropic"] = {"type": "anthropic", "api_key": "${ANTHROPIC_API_KEY}"}
        models["claude"] = {"provider": "anthropic", "model": "claude-sonnet-4-6"}
    gemini_key = "GEMINI_API_KEY" if env.get("GEMINI_API_KEY") else "GOOGLE_API_KEY"
    if env.get(gemini_key):
        providers["google"] = {"type": "gemini", "api_key": f"${{{gemini_key}}}"}
        models["gemini"] = {"provider": "google", "model": "gemini-2.5-flash"}
    if providers:
        said = "provider keys found for: " + ", ".join(providers)
    else:
        providers["sim"] = {"type": "simulated", "latency_ms": 50}
        models["sim-fast"] = {
            "provider": "sim",
            "model": "sim-fast",
            "input_price": 0.15,
            "output_price": 0.60,
        }
        models["sim-smart"] = {
            "provider": "sim",
            "model": "sim-smart",
            "input_price": 2.5,
            "output_price": 10.0,
        }
        said = "no provider key found: serving the built-in simulated provider"
    routes = {"default": {"failover": list(models)}}
    text = yaml.safe_dump(
        {"providers": providers, "models": models, "routes": routes}, sort_keys=False
    )
    return text, said


def _load(path: str | None) -> tuple[RouterConfig, str]:
    path = path or os.environ.get(CONFIG_ENV)
    if path:
        return load_config(path), f"config {path}"
    text, said = zero_config(os.environ)
    return parse_config(text, source="<built from the environment>"), said


def _print_problems(error: ConfigError, where: str) -> None:
    print(f"{where}: {len(error.problems)} problem(s)", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from app.gateway import Gateway

    try:
        config = load_config(args.path)
        Gateway.build(config)
    except ConfigError as error:
        _print_problems(error, args.path)
        return 1
    routes = ", ".join(config.routes) or "none"
    print(
        f"{args.path}: ok ({len(config.providers)} providers, {len(config.models)} models, "
        f"routes: {routes})"
    )
    return 0


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"llm-router explain: {what} takes key=value, got '{item}'")
        pairs[key] = value
    return pairs


def cmd_explain(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from pydantic import ValidationError

    from app.chat import ChatRequest, Message
    from app.explain import explain, render
    from app.gateway import Gateway

    try:
        config, _ = _load(args.config)
        gateway = Gateway.build(config)
    except ConfigError as error:
        _print_problems(error, args.config or os.environ.get(CONFIG_ENV) or "config")
        return 1
    try:
        request = ChatRequest(
            route=args.route,
            messages=[Message(role="user", content=" ".join(args.text))],
            user=args.user,
            metadata=_pairs(args.meta, "--meta"),
            max_cost_usd=args.max_cost,
            max_tokens=args.max_tokens,
        )
    except ValidationError as error:
        print(f"llm-router explain: {error.errors()[0]['msg']}", file=sys.stderr)
        return 2

    async def run() -> Any:
        try:
            return await explain(gateway, request, _pairs(args.header, "--header"))
        finally:
            await gateway.aclose()

    result = asyncio.run(run())
    print(json.dumps(result.as_dict(), indent=2) if args.json else render(result))
    return 1 if result.error else 0


# SIGTERM drains in-flight requests first (app/lifecycle.py, up to server.drain_timeout_s);
# what the server then waits for connections is only what outlived that deadline.
_AFTER_DRAIN_S = 1


def _access_log(args: argparse.Namespace) -> bool:
    """Access lines as asked; by default where the log level shows them (info, debug). Above
    that the server would still work out every line's fields only for the logger to drop it."""
    if args.access_log is not None:
        return bool(args.access_log)
    return args.log_level in ("info", "debug")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.factory import create_app
    from app.metrics import prepare_multiprocess

    prepare_multiprocess(args.workers)  # before any metric exists: every worker's in one scrape
    try:
        config, said = _load(args.config)
        app = create_app(config, reload=lambda: _load(args.config)[0])
    except ConfigError as error:
        _print_problems(error, args.config or os.environ.get(CONFIG_ENV) or "config")
        return 1
    print(f"llm-router {__version__}: {said}; routes: {', '.join(config.routes)}", flush=True)
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    if args.workers > 1:
        # Each worker process builds its own app from the same source.
        if args.config:
            os.environ[CONFIG_ENV] = args.config
        uvicorn.run(
            "app.cli:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=_access_log(args),
            timeout_graceful_shutdown=_AFTER_DRAIN_S,
            timeout_keep_alive=config.server.keep_alive_s,
            # A worker imports every provider SDK before it can answer uvicorn's health ping;
            # the default 5 s kills it on a slow disk before it ever serves.
            timeout_worker_healthcheck=60,
        )
    else:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=_access_log(args),
            timeout_graceful_shutdown=_AFTER_DRAIN_S,
            timeout_keep_alive=config.server.keep_alive_s,
        )
    return 0


def app_from_env() -> Any:
    """The app factory uvicorn's worker processes call (`--workers N`)."""
    from app.factory import create_app

    config, _ = _load(None)
    return create_app(config, reload=lambda: _load(None)[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-router", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llm-router {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument(
        "--config",
        help=f"router.yaml (default: ${CONFIG_ENV}, else built "
        "from provider keys in the environment)",
    )
    serve.add_argument("--host", default=os.environ.get("ROUTER_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("ROUTER_PORT", "8080")))
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a line per request (default: at log level info or debug)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(func=cmd_serve)

    validate = commands.add_parser("validate", help="check a config file without serving it")
    validate.add_argument("path")
    validate.set_defaults(func=cmd_validate)

    explain = commands.add_parser(
        "explain", help="show the path a request would take, and why, calling no final target"
    )
    explain.add_argument("--config", help=f"router.yaml (default: ${CONFIG_ENV}, as for serve)")
    explain.add_argument("--route", default="default")
    explain.add_argument("--user", help="the request's user (sticky A/B assignment, match)")
    explain.add_argument(
        "--meta", action="append", default=[], metavar="K=V", help="a metadata entry"
    )
    explain.add_argument(
        "--header", action="append", default=[], metavar="K=V", help="a request header"
    )
    explain.add_argument("--max-cost", type=float, metavar="USD", help="max_cost_usd")
    explain.add_argument("--max-tokens", type=int)
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")
    explain.add_argument("text", nargs="+", help="the user message")
    explain.set_defaults(func=cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
