"""Prices: lookup by bare, prefixed and dated names; unknown is None; registering."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenagents import pricing
from greenagents.pricing import cost_usd, price, register_price
from greenagents.result import Usage

MILLION = Usage(1_000_000, 1_000_000)


@pytest.fixture(autouse=True)
def _restore_table() -> Iterator[None]:
    saved = pricing._prices
    yield
    pricing._prices = saved
    pricing._price.cache_clear()  # lookups cached while the test's prices were in


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o-mini", (0.15, 0.60)),
    ("openai/gpt-4o-mini", (0.15, 0.60)),
    ("gpt-4o-mini-2024-07-18", (0.15, 0.60)),
    ("gpt-4o-2024-08-06", (2.50, 10.00)),
    ("GPT-4.1-nano", (0.10, 0.40)),
    ("o4-mini-2025-04-16", (1.10, 4.40)),
    ("anthropic/claude-haiku-4-5-20251001", (1.00, 5.00)),
    ("claude-sonnet-4-5", (3.00, 15.00)),
    ("claude-opus-4-1-20250805", (15.00, 75.00)),
])
def test_known_models(model: str, expected: tuple[float, float]) -> None:
    assert price(model) == expected


@pytest.mark.parametrize("model", ["my-finetune", "ollama/llama3", "gpt-4o1", "o3x", ""])
def test_unknown_is_none_not_zero(model: str) -> None:
    assert price(model) is None
    assert cost_usd(model, MILLION) is None


def test_cost() -> None:
    assert cost_usd("gpt-4o-mini", MILLION) == pytest.approx(0.75)
    assert cost_usd("claude-haiku-4-5", Usage(2_000, 400)) == pytest.approx(0.004)
    assert cost_usd("gpt-4o", Usage()) == 0.0


def test_register_price() -> None:
    register_price("ollama/llama3", 0, 0)
    assert cost_usd("ollama/llama3:8b", MILLION) == 0.0
    register_price("gpt-4o-mini", 0.1, 0.2)  # a negotiated rate replaces the list price
    assert price("openai/gpt-4o-mini-2024-07-18") == (0.1, 0.2)
    register_price("gpt-4o-mini-2024-07-18", 1, 2)  # the longest prefix wins
    assert price("gpt-4o-mini-2024-07-18") == (1.0, 2.0)
    with pytest.raises(ValueError, match=">= 0"):
        register_price("x", -1, 0)
