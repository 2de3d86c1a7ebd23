"""Provider adapters, one module each, registered here by their `type:` name in router.yaml."""

from __future__ import annotations

from providers.anthropic import AnthropicProvider
from providers.azure_openai import AzureOpenAIProvider
from providers.base import ModelConfig, Provider, ProviderConfig
from providers.bedrock import BedrockProvider
from providers.gemini import GeminiProvider
from providers.openai import OpenAIProvider
from providers.simulated import SimulatedProvider

PROVIDER_TYPES: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "azure_openai": AzureOpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "bedrock": BedrockProvider,
    "simulated": SimulatedProvider,
}

__all__ = ["PROVIDER_TYPES", "ModelConfig", "Provider", "ProviderConfig"]
