"""Agents shared by the tests: the seeds' examples, pointed at a simulator by a factory."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

import greenagents as ga


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)


class SentimentAgent(ga.Agent):
    model = "openai/gpt-4o-mini"
    instructions = "Classify the sentiment of the text."
    output = Sentiment

    def prompt(self, text: str) -> str:
        return text


class SummaryAgent(ga.Agent):
    model = "anthropic/claude-haiku-4-5"
    instructions = "Summarise the text in one sentence."

    def prompt(self, text: str, words: int = 20) -> str:
        return f"In at most {words} words: {text}"


def at(agent: type[ga.Agent], url: str, **attributes: Any) -> type[ga.Agent]:
    """A subclass of ``agent`` talking to ``url`` (and with other class attributes replaced)."""
    return agent.with_options(base_url=url, **attributes)
