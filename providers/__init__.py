"""Provider adapters, one module each, registered here by their `type:` name in router.yaml.

Modules are imported only when a config names their type: each SDK costs tens of megabytes and
up to seconds of start-up, and a gateway serving only OpenAI should pay for OpenAI alone.
"""

from __future__ import annotations

import importlib

from providers.base import ModelConfig, Provider, ProviderConfig

PROVIDER_MODULES: dict[str, tuple[str, str]] = {
    "openai": ("providers.openai", "OpenAIProvider"),
    "azure_openai": ("providers.azure_openai", "AzureOpenAIProvider"),
    "anthropic": ("providers.anthropic", "AnthropicProvider"),
    "gemini": ("providers.gemini", "GeminiProvider"),
    "bedrock": ("providers.bedrock", "BedrockProvider"),
    "simulated": ("providers.simulated", "SimulatedProvider"),
}


def provider_class(type_name: str) -> type[Provider]:
    """The adapter class for a `type:` name (KeyError when unknown), imported on first use."""
    module, name = PROVIDER_MODULES[type_name]
    return getattr(importlib.import_module(module), name)


__all__ = ["PROVIDER_MODULES", "ModelConfig", "Provider", "ProviderConfig", "provider_class"]
