"""What a call cost, in US dollars, from its token usage and a small, extendable price table.

Prices are USD per million tokens, ``(input, output)``. They are **approximate list prices** at the
time of writing (no cached-input discounts, no long-context surcharges) and will drift: check your
provider's pricing page, and :func:`register_price` your own models or negotiated rates. Calls sent
through a provider's Batch API (``ga.submit_batch``) cost :func:`batch_price`: half the list price
(OpenAI's and Anthropic's batch discount), unless ``register_price(..., batch=(in, out))`` says
otherwise.

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

__all__ = ["BATCH_DISCOUNT", "batch_price", "cost_usd", "price", "register_price"]

#: Share of the list price a Batch API call costs (OpenAI Batch, Anthropic Message Batches).
BATCH_DISCOUNT = 0.5

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


# Batch prices that are not BATCH_DISCOUNT × the list price; replaced whole like _prices.
_batch_prices: Mapping[str, tuple[float, float]] = {}


def register_price(model: str, input_per_mtok: float, output_per_mtok: float, *,
                   batch: tuple[float, float] | None = None) -> None:
    """Add or replace a model's price, in USD per million input and output tokens; ``batch`` is
    its Batch API price when that is not half the list price.

    >>> register_price("ollama/acme-llm", 0.0, 0.0)
    >>> price("acme-llm:8b")
    (0.0, 0.0)
    """
    global _prices, _batch_prices
    for value in (input_per_mtok, output_per_mtok, *(batch or ())):
        if value < 0:
            raise ValueError(f"prices must be >= 0, got {value}")
    _prices = {**_prices, _name(model): (float(input_per_mtok), float(output_per_mtok))}
    rest = {k: v for k, v in _batch_prices.items() if k != _name(model)}
    _batch_prices = rest if batch is None else {**rest, _name(model): (float(batch[0]),
                                                                       float(batch[1]))}
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
    best = _longest(name, table)
    return table[best] if best is not None else None


def _longest(name: str, table: Mapping[str, tuple[float, float]]) -> str | None:
    """The longest registered name that ``name`` is, or starts with before a separator."""
    best = None
    for known in table:
        matches = name == known or (name.startswith(known) and name[len(known)] in _SEPARATORS)
        if matches and (best is None or len(known) > len(best)):
            best = known
    return best


def batch_price(model: str) -> tuple[float, float] | None:
    """``(input, output)`` USD per million tokens through the Batch API, or None when unknown.

    >>> batch_price("openai/gpt-4o-mini")
    (0.075, 0.3)
    """
    table = _batch_prices  # one consistent snapshot
    override = _longest(_name(model), table)
    if override is not None:
        return table[override]
    rates = price(model)
    if rates is None:
        return None
    return rates[0] * BATCH_DISCOUNT, rates[1] * BATCH_DISCOUNT


def cost_usd(model: str, usage: Usage, *, batch: bool = False) -> float | None:
    """The cost of ``usage`` on ``model`` in USD (at the Batch API price with ``batch=True``),
    or None when the model's price is unknown.

    >>> cost_usd("gpt-4o", Usage(prompt_tokens=2_000, completion_tokens=500))
    0.01
    >>> cost_usd("gpt-4o", Usage(prompt_tokens=2_000, completion_tokens=500), batch=True)
    0.005
    """
    rates = batch_price(model) if batch else price(model)
    if rates is None:
        return None
    return (usage.prompt_tokens * rates[0] + usage.completion_tokens * rates[1]) / 1_000_000
