"""What a policy may read from a request by name: `user`, `metadata.<key>`, `header.<name>`, `env`.

`match` tests these against its rules and `ab_split` hashes one of them for sticky assignment, so
both spell them the same way. Names are parsed once, at load, into a `RequestKey`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.chat import ChatRequest
from app.routing import Call

Source = Literal["user", "metadata", "header", "env"]

_PREFIXES: dict[str, Source] = {
    "metadata.": "metadata",
    "header.": "header",
    "headers.": "header",
}


@dataclass(frozen=True)
class RequestKey:
    source: Source
    name: str = ""  # the metadata key or header name

    @classmethod
    def parse(cls, text: str) -> RequestKey:
        """`user`, `env`, `metadata.tier`, `header.x-tenant` (or `headers.…`); ValueError else."""
        if text in ("user", "env"):
            return cls(text)  # type: ignore[arg-type]
        for prefix, source in _PREFIXES.items():
            if text.startswith(prefix) and len(text) > len(prefix):
                name = text[len(prefix) :]
                return cls(source, name.lower() if source == "header" else name)
        raise ValueError(
            f"unknown request key '{text}': use user, env, metadata.<key> or header.<name>"
        )

    def __str__(self) -> str:
        return self.source if not self.name else f"{self.source}.{self.name}"

    def value(self, call: Call) -> Any:
        """The key's value in this call, or None when the request does not carry it."""
        if self.source == "user":
            return call.request.user
        if self.source == "env":
            return call.env
        if self.source == "metadata":
            return call.request.metadata.get(self.name)
        for header, value in call.headers.items():  # any Mapping; header names match any case
            if header.lower() == self.name:
                return value
        return None


def as_text(value: Any) -> str:
    """A value as rules compare it: YAML's `true` and JSON's true both read 'true'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def user_text(request: ChatRequest) -> str:
    """The text a classifier or scorer judges: the last user message (the whole ask when the
    conversation holds no user turn)."""
    for message in reversed(request.messages):
        if message.role == "user" and message.content:
            return message.content
    return "\n".join(m.content for m in request.messages if m.content)
