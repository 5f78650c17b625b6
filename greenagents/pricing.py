"""What a call cost, in US dollars, from its token usage and a small, extendable price table.

Prices are USD per million tokens, ``(input, output)``. They are **approximate list prices** at the
time of writing (no batch or cached-input discounts, no long-context surcharges) and will drift:
check your provider's pricing page, and :func:`register_price` your own models or negotiated rates.

Lookup ignores a provider prefix (``"openai/gpt-4o-mini"``) and takes the longest registered name
the model starts with, so dated snapshots (``"gpt-4o-mini-2024-07-18"``) and tags
(``"llama3:8b"``) find their family. Unknown models cost ``None``, not 0: unknown is not free.

>>> from greenagents.result import Usage
>>> cost_usd("openai/gpt-4o-mini-2024-07-18", Usage(1_000_000, 1_000_000))
0.75
>>> cost_usd("my-finetune", Usage(10, 10)) is None
True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from .result import Usage

__all__ = ["cost_usd", "price", "register_price"]

# Characters that may follow a registered name in a longer model id (snapshot date, tag, version).
_SEPARATORS = "-@:"

# Replaced whole by register_price, never mutated, so readers never see a half-updated table.
_prices: Mapping[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    # Anthropic
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
}


def _name(model: str) -> str:
    """The bare, lower-case model name: ``"openai/GPT-4o"`` -> ``"gpt-4o"``."""
    return model.rsplit("/", 1)[-1].strip().lower()


def register_price(model: str, input_per_mtok: float, output_per_mtok: float) -> None:
    """Add or replace a model's price, in USD per million input and output tokens.

    >>> register_price("ollama/acme-llm", 0.0, 0.0)
    >>> price("acme-llm:8b")
    (0.0, 0.0)
    """
    global _prices
    if input_per_mtok < 0 or output_per_mtok < 0:
        raise ValueError(f"prices must be >= 0, got {input_per_mtok}, {output_per_mtok}")
    _prices = {**_prices, _name(model): (float(input_per_mtok), float(output_per_mtok))}
    _price.cache_clear()


def price(model: str) -> tuple[float, float] | None:
    """``(input, output)`` USD per million tokens for ``model``, or None when unknown.

    >>> price("anthropic/claude-haiku-4-5-20251001")
    (1.0, 5.0)
    """
    return _price(_name(model))


@functools.lru_cache(maxsize=1024)
def _price(name: str) -> tuple[float, float] | None:
    """The longest-prefix match, remembered (every call of every agent asks for a price);
    :func:`register_price` forgets what was remembered."""
    table = _prices  # one consistent snapshot
    best = None
    for known in table:
        matches = name == known or (name.startswith(known) and name[len(known)] in _SEPARATORS)
        if matches and (best is None or len(known) > len(best)):
            best = known
    return table[best] if best is not None else None


def cost_usd(model: str, usage: Usage) -> float | None:
    """The cost of ``usage`` on ``model`` in USD, or None when the model's price is unknown.

    >>> cost_usd("gpt-4o", Usage(prompt_tokens=2_000, completion_tokens=500))
    0.01
    """
    rates = price(model)
    if rates is None:
        return None
    return (usage.prompt_tokens * rates[0] + usage.completion_tokens * rates[1]) / 1_000_000
