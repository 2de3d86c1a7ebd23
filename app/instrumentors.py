"""Bring your own instrumentor: the provider SDKs' auto-instrumentation, per provider entry.

Each provider entry picks `instrumentation: openinference | traceloop | none`. Instrumentation
patches an SDK for the whole process, so the choice is really per SDK: two entries on one SDK
(an `openai` and an `azure_openai` entry, say) must agree, or every call would be traced twice.
That is refused at start (`conflicts`).

An instrumentor can do nothing without a word: its package may be missing, or it may refuse the
installed SDK version (its dependency check fails and `instrument()` quietly returns). Both are
caught here: we check the instrumentor's declared dependencies, and we look at the SDK entry
points it is known to patch before and after. Whatever happened is said in `Installed.report`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import TracerProvider

from providers.base import ProviderConfig

log = logging.getLogger("llm_router.tracing")

# Which SDK each provider type drives (None: no SDK, nothing to instrument).
SDK_OF_TYPE: dict[str, str | None] = {
    "openai": "openai",
    "azure_openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google-genai",
    "bedrock": "boto3",
    "simulated": None,
}

# The SDK callables our adapters go through and that one family or the other wraps. Compared
# before and after `instrument()` to see that something was patched, and put back after
# `uninstrument()` (Traceloop's OpenAI instrumentor leaves its wrappers in place).
PATCH_POINTS: dict[str, tuple[str, ...]] = {
    "openai": (
        "openai.AsyncOpenAI.request",
        "openai.resources.chat.completions.AsyncCompletions.create",
    ),
    "anthropic": ("anthropic.resources.messages.AsyncMessages.create",),
    "google-genai": (
        "google.genai.models.AsyncModels.generate_content",
        "google.genai.models.AsyncModels.generate_content_stream",
    ),
    "boto3": ("botocore.client.ClientCreator.create_client",),
}

# (family, sdk) -> "module:Class" of the instrumentor, and the distribution that ships it.
INSTRUMENTORS: dict[tuple[str, str], tuple[str, str]] = {
    ("openinference", "openai"): (
        "openinference.instrumentation.openai:OpenAIInstrumentor",
        "openinference-instrumentation-openai",
    ),
    ("openinference", "anthropic"): (
        "openinference.instrumentation.anthropic:AnthropicInstrumentor",
        "openinference-instrumentation-anthropic",
    ),
    ("openinference", "google-genai"): (
        "openinference.instrumentation.google_genai:GoogleGenAIInstrumentor",
        "openinference-instrumentation-google-genai",
    ),
    ("openinference", "boto3"): (
        "openinference.instrumentation.bedrock:BedrockInstrumentor",
        "openinference-instrumentation-bedrock",
    ),
    ("traceloop", "openai"): (
        "opentelemetry.instrumentation.openai:OpenAIInstrumentor",
        "opentelemetry-instrumentation-openai",
    ),
    ("traceloop", "anthropic"): (
        "opentelemetry.instrumentation.anthropic:AnthropicInstrumentor",
        "opentelemetry-instrumentation-anthropic",
    ),
    # Traceloop's "google_generativeai" instrumentor targets the google-genai SDK since 0.40.
    ("traceloop", "google-genai"): (
        "opentelemetry.instrumentation.google_generativeai:GoogleGenerativeAiInstrumentor",
        "opentelemetry-instrumentation-google-generativeai",
    ),
    ("traceloop", "boto3"): (
        "opentelemetry.instrumentation.bedrock:BedrockInstrumentor",
        "opentelemetry-instrumentation-bedrock",
    ),
}

TRACELOOP_CONTENT_VAR = "TRACELOOP_TRACE_CONTENT"


def families_by_sdk(providers: Mapping[str, ProviderConfig]) -> dict[str, str]:
    """SDK -> the instrumentation family its provider entries ask for ("none" included)."""
    chosen: dict[str, str] = {}
    for config in providers.values():
        sdk = SDK_OF_TYPE.get(config.type)
        if sdk is not None:
            chosen.setdefault(sdk, config.instrumentation)
    return chosen


def conflicts(providers: Mapping[str, ProviderConfig]) -> list[tuple[str, str]]:
    """(provider name, message) for each entry whose family differs from an earlier one's."""
    first: dict[str, tuple[str, str]] = {}
    found: list[tuple[str, str]] = []
    for name, config in providers.items():
        sdk = SDK_OF_TYPE.get(config.type)
        if sdk is None:
            continue
        if sdk not in first:
            first[sdk] = (name, config.instrumentation)
            continue
        other, family = first[sdk]
        if family != config.instrumentation:
            found.append(
                (
                    name,
                    f"instrumentation '{config.instrumentation}' differs from provider "
                    f"'{other}' ('{family}'), which uses the same {sdk} SDK: an SDK is "
                    "instrumented once per process, so its providers must agree",
                )
            )
    return found


def _resolve(path: str) -> Any:
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _snapshot(sdk: str) -> dict[str, Any]:
    points: dict[str, Any] = {}
    for path in PATCH_POINTS.get(sdk, ()):
        try:
            points[path] = _resolve(path)
        except (ImportError, AttributeError):
            continue
    return points


def _restore(points: Mapping[str, Any]) -> None:
    for path, original in points.items():
        owner_path, _, attribute = path.rpartition(".")
        try:
            owner = _resolve(owner_path)
        except (ImportError, AttributeError):
            continue
        if getattr(owner, attribute, None) is not original:
            setattr(owner, attribute, original)


@dataclass
class Installed:
    """The instrumentors this process put in place, and what happened to each SDK."""

    active: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    report: dict[str, str] = field(default_factory=dict)  # sdk -> what happened
    instrumented: dict[str, str] = field(default_factory=dict)  # sdk -> family, when working

    def uninstrument(self) -> None:
        for sdk, instrumentor, originals in reversed(self.active):
            try:
                instrumentor.uninstrument()
            except Exception as exc:  # an instrumentor failing to let go must not stop shutdown
                log.warning("uninstrumenting %s failed: %s", sdk, type(exc).__name__)
            _restore(originals)
        self.active.clear()
        self.instrumented.clear()


def install(
    providers: Mapping[str, ProviderConfig], tracer_provider: TracerProvider, *, capture: bool
) -> Installed:
    """Instrument each SDK the providers use, once, with its chosen family."""
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    installed = Installed()
    for sdk, family in families_by_sdk(providers).items():
        if family == "none":
            installed.report[sdk] = "not instrumented (instrumentation: none)"
            continue
        target, package = INSTRUMENTORS[(family, sdk)]
        module_name, _, class_name = target.partition(":")
        try:
            instrumentor = getattr(importlib.import_module(module_name), class_name)()
        except ImportError:
            installed.report[sdk] = f"NOT instrumented: {package} is not installed"
            continue
        conflict = get_dependency_conflicts(list(instrumentor.instrumentation_dependencies()))
        if conflict is not None:
            installed.report[sdk] = f"NOT instrumented: {package} does not support it ({conflict})"
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            installed.report[sdk] = (
                f"NOT instrumented: {package} is already in use by another tracer in this process"
            )
            continue
        before = _snapshot(sdk)
        options: dict[str, Any] = {"tracer_provider": tracer_provider}
        if family == "openinference":
            from openinference.instrumentation import TraceConfig

            options["config"] = TraceConfig(hide_inputs=not capture, hide_outputs=not capture)
        try:
            instrumentor.instrument(**options)
        except Exception as exc:
            installed.report[sdk] = f"NOT instrumented: {package} failed ({type(exc).__name__})"
            continue
        patched = [path for path, obj in before.items() if _resolve(path) is not obj]
        if not instrumentor.is_instrumented_by_opentelemetry or not patched:
            installed.report[sdk] = f"NOT instrumented: {package} patched nothing"
            instrumentor.uninstrument()
            _restore(before)
            continue
        installed.active.append((sdk, instrumentor, before))
        installed.instrumented[sdk] = family
        installed.report[sdk] = f"instrumented by {package} ({family})"
    return installed


def settle_stream(stream: Any) -> None:
    """Once OpenInference's stream wrapper has ended its span, let go of what it accumulated.

    The wrapper (openinference-instrumentation-openai's `_Stream`) works out the span's output
    attributes (the whole answer as JSON, the completion model rebuilt from it and read) each
    time it is told to finish, and only then finds its span already ended; its `__del__` tells
    it once more when the stream is collected, which costs as much as the real finish. Without
    its accumulator, that last call has nothing to work out: the span, already ended and
    exported, is the same. Anything else (no instrumentor, another layout of the wrapper, a span
    not yet ended) is left as it is.
    """
    try:
        if stream._self_with_span.is_finished and stream._self_response_accumulator is not None:
            stream._self_response_accumulator = None
    except AttributeError:
        return
