"""Bundled list prices, USD per million tokens (input, output), so `cost_usd` is right unconfigured.

Taken from each provider's public price page as of PRICES_AS_OF; a model alias overrides them with
`input_price` / `output_price`. A model id is matched exactly, then by its longest listed prefix
(so dated snapshots such as `gpt-4o-2024-08-06` take their family's price). Bedrock ids are
matched without their region and vendor prefix (`us.anthropic.claude-…` → `claude-…`).
"""

from __future__ import annotations

PRICES_AS_OF = "2026-11-01"

PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    # Anthropic (platform.claude.com model pages; Haiku 5.5 at its rate for prompts to 100k)
    "claude-fable-5": (10.00, 50.00),
    "claude-mythos-5": (10.00, 50.00),
    "claude-opus-5-5": (4.00, 20.00),
    "claude-opus-5": (5.00, 25.00),
    "claude-sonnet-5-5": (2.00, 10.00),
    "claude-sonnet-5": (2.00, 10.00),
    "claude-haiku-5-5": (0.10, 0.50),
    "claude-opus-4-5": (5.00, 25.00),  # 4.5 onwards; 4 and 4.1 kept their price
    "claude-opus-4-6": (5.00, 25.00),
    "claude-opus-4-7": (5.00, 25.00),
    "claude-opus-4-8": (5.00, 25.00),
    "claude-sonnet-4-6": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    # Google Gemini (prompts up to 200k tokens)
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    # Models commonly served through Bedrock
    "amazon.nova-pro": (0.80, 3.20),
    "amazon.nova-lite": (0.06, 0.24),
    "amazon.nova-micro": (0.035, 0.14),
    "meta.llama3-1-70b-instruct": (0.72, 0.72),
    "meta.llama3-1-8b-instruct": (0.22, 0.22),
    "mistral.mistral-large": (2.00, 6.00),
}

_BEDROCK_VENDORS = (
    "anthropic.",
    "us.anthropic.",
    "eu.anthropic.",
    "apac.anthropic.",
    "global.anthropic.",
)


def list_price(model_id: str) -> tuple[float, float] | None:
    """The bundled (input, output) price for a model id, or None when it is not listed."""
    candidates = [model_id]
    for prefix in _BEDROCK_VENDORS:
        if model_id.startswith(prefix):
            candidates.append(model_id[len(prefix) :])
    if model_id.startswith(("us.", "eu.", "apac.", "global.")):
        candidates.append(model_id.split(".", 1)[1])
    for candidate in candidates:
        if candidate in PRICES:
            return PRICES[candidate]
    best: str | None = None
    for candidate in candidates:
        for listed in PRICES:
            if candidate.startswith(listed) and (best is None or len(listed) > len(best)):
                best = listed
    return PRICES[best] if best is not None else None
