"""Secrets never leave: what an upstream says is scrubbed of the config's secrets before it can
reach a caller, a log line or a span.

An upstream may quote the key it was sent (OpenAI's 401 does; a proxy's error page might on any
status), and the SDKs put the upstream's text into their exceptions, which adapters turn into
attempt messages and instrumentors record on spans. Two wrappers close both paths:
`RedactingProvider` scrubs every `ProviderError` a provider raises, and `RedactingExporter`
scrubs every span on its way out (the instrumentors' own spans included).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from pydantic import BaseModel, SecretStr

from app.chat import ChatRequest, Completion, StreamEvent
from app.errors import ProviderError
from providers.base import ModelConfig, Provider

MASK = "[redacted]"
MIN_FRAGMENT = 8  # a quoted prefix or suffix of a secret this long is scrubbed too


def secrets_of(*values: Any) -> frozenset[str]:
    """Every non-empty `SecretStr` in these configs, however deeply nested."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if len(secret) >= 4:
                found.add(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    for value in values:
        walk(value)
    return frozenset(found)


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted(set(secrets), key=len, reverse=True)
        # Whatever this scrubs (the secret, or a long enough prefix or suffix of it) holds the
        # secret's first or last MIN_FRAGMENT characters: a text with neither is left as it is
        # after two searches, the case of nearly every text.
        self._probes = [(s, s[:MIN_FRAGMENT], s[-MIN_FRAGMENT:]) for s in self.secrets]

    def __call__(self, text: str) -> str:
        for secret, head, tail in self._probes:
            if head in text or tail in text:
                if secret in text:
                    text = text.replace(secret, MASK)
                text = self._fragments(secret, text)
        return text

    @staticmethod
    def _fragments(secret: str, text: str) -> str:
        # The longest prefix or suffix of the secret the text quotes, if long enough to matter.
        # Any such prefix holds the first MIN_FRAGMENT characters, any suffix the last: most
        # texts are cleared by these two searches.
        if secret[:MIN_FRAGMENT] not in text and secret[-MIN_FRAGMENT:] not in text:
            return text
        for size in range(len(secret) - 1, MIN_FRAGMENT - 1, -1):
            for fragment in (secret[:size], secret[-size:]):
                if fragment in text:
                    return text.replace(fragment, MASK)
        return text

    def error(self, error: ProviderError) -> ProviderError:
        scrubbed = self(error.message)
        if scrubbed != error.message:
            error.message = scrubbed
            error.args = (scrubbed,)
        return error


class RedactingProvider(Provider):
    """Wraps a provider; its errors come out scrubbed. Everything else is the wrapped one's."""

    def __init__(self, inner: Provider, redactor: Redactor) -> None:
        super().__init__(inner.name, inner.config)
        self.inner = inner
        self.redactor = redactor

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def complete(self, model: ModelConfig, request: ChatRequest) -> Completion:
        try:
            return await self.inner.complete(model, request)
        except ProviderError as error:
            raise self.redactor.error(error) from None

    async def stream(self, model: ModelConfig, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        events = self.inner.stream(model, request)
        try:
            async for event in events:
                yield event
        except ProviderError as error:
            raise self.redactor.error(error) from None
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.inner.aclose()


class RedactingExporter(SpanExporter):
    """Scrubs span names, attributes, events and status messages before the inner exporter."""

    def __init__(self, inner: SpanExporter, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.redactor.secrets:
            return self.inner.export(spans)
        return self.inner.export([scrubbed(span, self.redactor) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def scrubbed(span: ReadableSpan, redactor: Redactor) -> ReadableSpan:
    """A copy of the span with the secrets masked in its name, attributes, events and status."""

    def value(v: Any) -> Any:
        if isinstance(v, str):
            return redactor(v)
        if isinstance(v, tuple | list):
            return tuple(value(x) for x in v)
        return v

    def attributes(given: Any) -> dict[str, Any]:
        return {key: value(v) for key, v in (given or {}).items()}

    status = span.status
    if status.description:
        status = Status(status.status_code, redactor(status.description))
    events = [Event(redactor(e.name), attributes(e.attributes), e.timestamp) for e in span.events]
    return ReadableSpan(
        name=redactor(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
