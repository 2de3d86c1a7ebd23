"""router.yaml: loaded once, interpolated from the environment, validated into typed models.

Every problem is reported with its path in the file, its line where the YAML gives one, and a
did-you-mean suggestion for a misspelt name. Routes are checked further (names resolved,
policies validated, cycles refused) when the routing tree is compiled (`app/routing.py`).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
)

from providers import PROVIDER_MODULES, ModelConfig, ProviderConfig, provider_class

Loc = tuple[str | int, ...]


# ---- problems ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        if not self.path:
            return f"line {self.line}: {self.message}" if self.line else self.message
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot serve: every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def dotted(loc: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in loc)


def suggest(name: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# ---- the typed config --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallerKeyConfig(_Strict):
    """A named caller key with its own limits (`server.keys`); unset limits do not apply."""

    key: SecretStr  # an empty key (e.g. an unset ${VAR:-}) disables the entry
    name: str = Field(min_length=1)
    rpm: int | None = Field(default=None, ge=1)  # requests per minute
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute
    budget_usd_per_day: float | None = Field(default=None, gt=0)  # UTC days


class ServerConfig(_Strict):
    api_keys: list[SecretStr] = Field(default_factory=list)  # empty strings ignored
    keys: list[CallerKeyConfig] = Field(default_factory=list)
    admin_key: SecretStr | None = None
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    max_messages: int = Field(default=1000, gt=0)  # per request; more: 413
    max_header_bytes: int = Field(default=16_384, gt=0)  # all request headers together; more: 431
    request_timeout_s: float = Field(default=300.0, gt=0)  # overall deadline per request
    drain_timeout_s: float = Field(default=30.0, ge=0)  # SIGTERM: in-flight requests finish
    # How long an idle caller connection is kept open. Longer than the callers' own pools keep
    # one (httpx 5 s, Go 90 s) and a proxy's idle timeout (an ALB's 60 s): when the gateway
    # closes first, a request sent on the closing connection is lost (a reset, a 502 upstream).
    keep_alive_s: float = Field(default=75.0, gt=0)

    def caller_keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.api_keys]
        keys += [entry.key.get_secret_value() for entry in self.keys]
        return [k for k in keys if k]


class StateConfig(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    url: str = "redis://localhost:6379/0"
    prefix: str = "llm-router:"  # every key this gateway writes starts with it
    timeout_s: float = Field(default=0.25, gt=0)  # Redis connect and socket timeouts
    retry_s: float = Field(default=5.0, gt=0)  # after Redis failed: local memory this long


class TracingConfig(_Strict):
    exporter: Literal["honeyhive", "otlp", "console", "none"] = "none"
    api_key: SecretStr | None = None
    api_url: str | None = None
    endpoint: str | None = None
    project: str = "llm-router"
    source: str = "development"
    capture_content: bool = True
    max_queue: int = Field(default=4096, ge=1)  # spans held for export; beyond it, dropped


NodeSpec = str | dict[str, Any]


class RouterConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    # Each entry is its adapter's own config model, validated in parse_config (lazily imported).
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, NodeSpec] = Field(default_factory=dict)

    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)
    _source: str | None = PrivateAttr(default=None)

    def line_of(self, loc: Loc) -> int | None:
        """The YAML line of `loc`, or of its nearest ancestor the file spells out."""
        while loc:
            if loc in self._lines:
                return self._lines[loc]
            loc = loc[:-1]
        return None

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(dotted(loc), message, self.line_of(loc))

    @property
    def source(self) -> str | None:
        return self._source


# ---- loading ----------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-)?")


def interpolate(text: str, env: Mapping[str, str], missing: list[str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}` (defaults may nest). Unset names go to `missing`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):  # an escaped literal "${"
            out.append("${")
            i += 3
            continue
        match = _VAR.match(text, i)
        if not match:
            out.append(text[i])
            i += 1
            continue
        name = match.group(1)
        has_default = match.group(0).endswith(":-")
        j = match.end()
        if not has_default:
            if j < len(text) and text[j] == "}":
                if name in env:
                    out.append(env[name])
                else:
                    missing.append(name)
                i = j + 1
                continue
            out.append(text[i])  # not a reference after all
            i += 1
            continue
        # Find the closing brace of this reference, skipping nested ${...}.
        depth, k = 1, j
        while k < len(text) and depth:
            if text.startswith("${", k):
                depth += 1
                k += 2
                continue
            if text[k] == "}":
                depth -= 1
            k += 1
        if depth:
            out.append(text[i:])
            break
        default = text[j : k - 1]
        value = env.get(name, "")
        out.append(value if value != "" else interpolate(default, env, missing))
        i = k
    return "".join(out)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            lines[(*loc, name)] = key.start_mark.line + 1
            _walk(value, (*loc, name), lines)
            lines[(*loc, name)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), lines)


def _substitute(
    value: Any, env: Mapping[str, str], loc: Loc, missing: list[tuple[Loc, str]]
) -> Any:
    if isinstance(value, str):
        names: list[str] = []
        result = interpolate(value, env, names)
        missing.extend((loc, name) for name in names)
        return result
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*loc, k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*loc, i), missing) for i, v in enumerate(value)]
    return value


def parse_config(
    text: str, *, env: Mapping[str, str] | None = None, source: str | None = None
) -> RouterConfig:
    """Validate YAML text into a RouterConfig, or raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    lines: dict[Loc, int] = {}
    try:
        # safe_load semantics: plain data only, never Python objects.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem("", f"not valid YAML: {reason}", line)]) from None
    if root is not None:
        if _expanded_size(root) > MAX_VALUES:
            message = f"the file expands to more than {MAX_VALUES} values (through its aliases)"
            raise ConfigError([Problem("", message)])
        _walk(root, (), lines)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("", "the file must hold a mapping (server:, providers:, …)")])

    missing: list[tuple[Loc, str]] = []
    data = _substitute(data, env, (), missing)
    problems = [
        Problem(dotted(loc), f"environment variable {name} is not set", _line(lines, loc))
        for loc, name in missing
    ]
    providers, provider_problems = _validate_providers(data.get("providers"), lines)
    problems.extend(provider_problems)
    try:
        config = RouterConfig.model_validate({**data, "providers": providers})
    except ValidationError as exc:
        problems.extend(_explain(exc, data, lines))
    if problems:
        raise ConfigError(problems)
    config._lines = lines
    config._source = source
    problems.extend(_cross_check(config))
    if problems:
        raise ConfigError(problems)
    return config


MAX_VALUES = 100_000  # a config is small; an alias bomb ("billion laughs") is refused


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document holds once its aliases are expanded, counted over the
    node graph (each shared node once, times its uses) without expanding anything."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int = 0) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > 200:  # nested deeper than any config: as good as too big
            return MAX_VALUES + 1
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        sizes[id(node)] = total = min(total, MAX_VALUES + 1)
        return total

    return size(root)


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> RouterConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read {path}: {exc.strerror}")]) from None
    return parse_config(text, env=env, source=str(path))


def _line(lines: dict[Loc, int], loc: Loc) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


_SECTION_FIELDS: dict[str, type[BaseModel]] = {
    "server": ServerConfig,
    "state": StateConfig,
    "tracing": TracingConfig,
}


def _validate_providers(
    raw: Any, lines: dict[Loc, int]
) -> tuple[dict[str, ProviderConfig], list[Problem]]:
    """Each provider entry validated by its own adapter's config model."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [
            Problem(
                "providers", "must be a mapping of names to providers", _line(lines, ("providers",))
            )
        ]
    typed: dict[str, ProviderConfig] = {}
    problems: list[Problem] = []
    for name, entry in raw.items():
        loc: Loc = ("providers", name)
        kind = entry.get("type") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or kind is None:
            message = f"a provider needs a type: one of {', '.join(PROVIDER_MODULES)}"
            problems.append(Problem(dotted(loc), message, _line(lines, loc)))
            continue
        if kind not in PROVIDER_MODULES:
            message = f"unknown provider type '{kind}'{suggest(str(kind), PROVIDER_MODULES)}"
            problems.append(Problem(dotted((*loc, "type")), message, _line(lines, (*loc, "type"))))
            continue
        model = provider_class(kind).config_model
        try:
            typed[name] = model.model_validate(entry)
        except ValidationError as exc:
            problems.extend(
                _explain(exc, entry, lines, prefix=loc, fields=list(model.model_fields))
            )
    return typed, problems


def _explain(
    exc: ValidationError,
    data: dict[str, Any],
    lines: dict[Loc, int],
    *,
    prefix: Loc = (),
    fields: list[str] | None = None,
) -> list[Problem]:
    """Turn pydantic's errors into problems with file paths, lines and suggestions."""
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = (*prefix, *error["loc"])
        message = error["msg"]
        kind = error["type"]
        if kind == "extra_forbidden" and loc:
            name = str(loc[-1])
            known = (
                fields
                if fields is not None and len(error["loc"]) == 1
                else _known_fields(loc, data)
            )
            message = f"unknown field '{name}'{suggest(name, known)}"
        elif kind == "missing":
            message = "required field is missing"
        problems.append(Problem(dotted(loc), message, _line(lines, loc)))
    return problems


def _known_fields(loc: Loc, data: dict[str, Any]) -> list[str]:
    parent = loc[:-1]
    if not parent:
        return list(RouterConfig.model_fields)
    if len(parent) == 1 and parent[0] in _SECTION_FIELDS:
        return list(_SECTION_FIELDS[str(parent[0])].model_fields)
    if len(parent) == 2 and parent[0] == "models":
        return list(ModelConfig.model_fields)
    return []


def _cross_check(config: RouterConfig) -> list[Problem]:
    problems: list[Problem] = _check_keys(config)
    for alias, model in config.models.items():
        if model.provider not in config.providers:
            problems.append(
                config.problem(
                    ("models", alias, "provider"),
                    f"unknown provider '{model.provider}'"
                    + suggest(model.provider, config.providers),
                )
            )
        if "/" in alias:
            problems.append(config.problem(("models", alias), "an alias may not contain '/'"))
    for name in config.routes:
        if name in config.models:
            problems.append(
                config.problem(
                    ("routes", name),
                    f"'{name}' is both a route and a model alias; they share one namespace",
                )
            )
        if "/" in name:
            problems.append(config.problem(("routes", name), "a route name may not contain '/'"))
    return problems


def _check_keys(config: RouterConfig) -> list[Problem]:
    problems: list[Problem] = []
    server = config.server
    seen: set[str] = set()
    for i, entry in enumerate(server.keys):
        if entry.name in seen:
            problems.append(
                config.problem(("server", "keys", i, "name"), f"'{entry.name}' is named twice")
            )
        seen.add(entry.name)
    admin = server.admin_key.get_secret_value() if server.admin_key else ""
    if admin and admin in server.caller_keys():
        problems.append(
            config.problem(("server", "admin_key"), "the admin key must differ from caller keys")
        )
    return problems
