"""Azure OpenAI through `AsyncAzureOpenAI`: the OpenAI adapter with Azure's addressing and auth.

The model alias's `model` (or its explicit `deployment`) names the Azure deployment; the SDK
turns it into `/openai/deployments/{deployment}/chat/completions?api-version=…`.
"""

from __future__ import annotations

from typing import Any, Literal

import openai
from pydantic import SecretStr, model_validator

from providers.base import ModelConfig, ProviderConfig
from providers.openai import OpenAIProvider, http_client


class AzureOpenAIConfig(ProviderConfig):
    type: Literal["azure_openai"] = "azure_openai"
    endpoint: str
    api_version: str = "2024-10-21"
    api_key: SecretStr | None = None
    # Microsoft Entra ID instead of a key: a static token, or DefaultAzureCredential
    # (needs the `azure-identity` package) when `entra_id: true`.
    azure_ad_token: SecretStr | None = None
    entra_id: bool = False
    max_connections: int = 100
    transport: Literal["aiohttp", "httpx"] = "aiohttp"  # as for type: openai

    @model_validator(mode="after")
    def _one_credential(self) -> AzureOpenAIConfig:
        given = [bool(self.api_key), bool(self.azure_ad_token), self.entra_id]
        if sum(given) != 1:
            raise ValueError("give exactly one of api_key, azure_ad_token or entra_id: true")
        return self


class AzureOpenAIProvider(OpenAIProvider):
    config_model = AzureOpenAIConfig  # type: ignore[assignment]
    config: AzureOpenAIConfig  # type: ignore[assignment]

    def _build_client(self, config: Any) -> openai.AsyncAzureOpenAI:
        credentials: dict[str, Any] = {}
        if config.api_key:
            credentials["api_key"] = config.api_key.get_secret_value()
        elif config.azure_ad_token:
            credentials["azure_ad_token"] = config.azure_ad_token.get_secret_value()
        else:
            credentials["azure_ad_token_provider"] = _entra_token_provider()
        return openai.AsyncAzureOpenAI(
            azure_endpoint=config.endpoint,
            api_version=config.api_version,
            max_retries=0,
            http_client=http_client(config.transport, config.max_connections),
            **credentials,
        )

    def _model_id(self, model: ModelConfig) -> str:
        return model.deployment or model.model


def _entra_token_provider() -> Any:
    try:
        from azure.identity.aio import (  # type: ignore[import-not-found]
            DefaultAzureCredential,
            get_bearer_token_provider,
        )
    except ImportError as exc:
        raise RuntimeError(
            "entra_id: true needs the azure-identity package (pip install azure-identity)"
        ) from exc
    return get_bearer_token_provider(
        DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default"
    )
