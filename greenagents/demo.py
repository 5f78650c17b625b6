"""``greenagents demo``: sample agents over a few hundred reviews, and what concurrency bought.

With no model given it needs no API key: a local simulator (OpenAI-compatible, lognormal latency
with a median of 1 s and a p99 of 3 s, a few 429s and 500s) serves from a child process, so its
CPU is not the client's. With ``model="provider/name"`` the same agents ask that real provider.
The agents are ordinary :class:`greenagents.Agent` subclasses; run them yourself::

    greenagents run greenagents.demo:SentimentAgent --input reviews.jsonl --output out.jsonl

>>> report = run(calls=3, concurrency=3, progress=False, latency=0.01)   # doctest: +SKIP
>>> report.calls, report.failed   # doctest: +SKIP
(3, 0)
"""

from __future__ import annotations

import greenagents.monkey  # first: patch before anything below can import ssl

# isort: split

import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field

import greenagents as ga

from .providers import resolve
from .summaries import ErrorCount, errors_by_type

__all__ = ["AGENTS", "Category", "CategoryAgent", "Report", "Sentiment", "SentimentAgent",
           "SummaryAgent", "reviews", "run"]


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)


class SentimentAgent(ga.Agent):
    """Structured output: a label and a confidence for one review."""

    instructions = "Classify the sentiment of the customer review."
    output = Sentiment

    def prompt(self, text: str) -> str:
        return text


class SummaryAgent(ga.Agent):
    """Plain text output: the review in one sentence."""

    instructions = "Summarise the customer review in one sentence."

    def prompt(self, text: str, words: int = 20) -> str:
        return f"In at most {words} words: {text}"


class Topic(str, Enum):
    shipping = "shipping"
    quality = "quality"
    price = "price"
    service = "service"
    other = "other"


class Category(BaseModel):
    topic: Topic


class CategoryAgent(ga.Agent):
    """Structured output constrained to an enum: what the review is about."""

    instructions = "Say which topic the customer review is mainly about."
    output = Category

    def prompt(self, text: str) -> str:
        return text


AGENTS: tuple[type[ga.Agent], ...] = (SentimentAgent, SummaryAgent, CategoryAgent)

_OPENINGS = ("I ordered the {item} last week", "Bought this {item} for my sister",
             "Second {item} from this shop", "The {item} arrived today")
_VERDICTS = ("and it is excellent", "and it broke after two days", "and it does the job",
             "but the price was too high", "and support answered within an hour",
             "but delivery took three weeks")
_ITEMS = ("kettle", "backpack", "desk lamp", "phone case", "blender", "rain jacket")


def reviews(count: int, seed: int = 0) -> list[str]:
    """``count`` short made-up product reviews, the same for the same seed.

    >>> reviews(1)
    ['The phone case arrived today and it is excellent.']
    """
    rng = random.Random(seed)
    return [f"{rng.choice(_OPENINGS).format(item=rng.choice(_ITEMS))} {rng.choice(_VERDICTS)}."
            for _ in range(count)]


@dataclass(frozen=True)
class Report:
    """What a demo run did, and what the same calls would have taken one by one."""

    where: str
    calls: int
    ok: int
    wall_s: float
    sequential_s: float
    retries: int
    peak_memory_mb: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    errors: tuple[ErrorCount, ...] = ()

    @property
    def failed(self) -> int:
        return self.calls - self.ok

    @classmethod
    def of(cls, where: str, results: Sequence[ga.Result[Any]], wall_s: float) -> Report:
        costs = [r.cost_usd for r in results if r.cost_usd is not None]
        return cls(where=where, calls=len(results), ok=sum(r.ok for r in results), wall_s=wall_s,
                   sequential_s=sum(r.duration_s for r in results),
                   retries=sum(max(r.attempts - 1, 0) for r in results),
                   peak_memory_mb=_peak_memory_mb(),
                   prompt_tokens=sum(r.usage.prompt_tokens for r in results if r.usage),
                   completion_tokens=sum(r.usage.completion_tokens for r in results if r.usage),
                   cost_usd=sum(costs) if costs else None,
                   errors=tuple(errors_by_type(results)))

    def rows(self) -> list[tuple[str, str]]:
        """The numbers as ``(label, value)`` pairs, ready for a two-column table under ``where``."""
        cost = "unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        return [("calls", f"{self.calls:,}"),
                ("ok / failed", f"{self.ok:,} / {self.failed:,}"),
                ("wall time", f"{self.wall_s:.1f} s"),
                ("one by one (sum of durations)", f"{self.sequential_s:.1f} s"),
                ("speed-up", f"{self.sequential_s / max(self.wall_s, 1e-9):.0f}x"),
                ("retries taken", f"{self.retries:,}"),
                ("peak memory", f"{self.peak_memory_mb:.0f} MB"),
                ("tokens (prompt + completion)",
                 f"{self.prompt_tokens:,} + {self.completion_tokens:,}"),
                ("cost", cost)]


def _peak_memory_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _run_agents(where: str, calls: int, concurrency: int, model: str | None,
                base_url: str | None, progress: bool) -> Report:
    agents = [agent.with_options(model=model or agent.model, base_url=base_url) for agent in AGENTS]
    texts = reviews(-(-calls // len(agents)))
    work = [(agents[n % len(agents)], {"text": texts[n // len(agents)]}) for n in range(calls)]
    started = time.perf_counter()
    results = ga.batch(work, max_concurrent=concurrency, progress=progress, warn_failures=False)
    return Report.of(where, results, time.perf_counter() - started)


def run(calls: int = 300, concurrency: int = 100, model: str | None = None, *,
        progress: bool = True, latency: float = 1.0, latency_p99: float = 3.0) -> Report:
    """Run the sample agents ``calls`` times, ``concurrency`` at once, and report.

    Without ``model``: against a simulator in a child process (``latency`` median and
    ``latency_p99`` seconds, 3% rate limits, 2% server errors). With ``model``: against that
    provider, whose API key must be in the environment (checked before any call).
    """
    if model is not None:
        resolve(model)  # a missing API key is a ConfigError now, not 300 failed calls later
        return _run_agents(model, calls, concurrency, model, None, progress)
    from .testing import Simulator

    knobs = Simulator(latency=latency, latency_p99=latency_p99,
                      faults={"rate_limit": 0.03, "server_error": 0.02})
    with knobs.start_process() as sim:
        where = f"simulator at {sim.base_url} ({ga.settings().default_model})"
        return _run_agents(where, calls, concurrency, None, sim.base_url, progress)
