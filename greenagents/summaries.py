"""What a batch amounted to: :func:`summary` of its Results, and the errors grouped by type.

Users summed ``cost_usd`` by hand; :func:`summary` gives the totals a run is judged by — how many
calls failed and why, tokens, money, and how long the typical and the slow calls took.

>>> from greenagents import Result, Usage
>>> from greenagents.errors import Timeout
>>> print(summary([Result(value=1, duration_s=1.0, usage=Usage(10, 2), cost_usd=0.012),
...                Result(error=Timeout("no answer in 5s"), duration_s=5.0)]))
2 calls: 1 ok, 1 failed; tokens 10 + 2; cost $0.0120; p50 1.00 s, p95 5.00 s
  1 × Timeout: no answer in 5s
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .result import Result

__all__ = ["CallsFailedWarning", "ErrorCount", "ErrorTally", "Summary", "errors_by_type", "summary",
           "warn_failures"]


@dataclass(frozen=True)
class ErrorCount:
    """How many calls failed with one error type, and the first such error's message."""

    type: str
    count: int
    first_message: str

    def __str__(self) -> str:
        return f"{self.count:,} × {self.type}: {_shorten(self.first_message)}"


class ErrorTally:
    """Failures counted by error type as they come, with the first message of each: what a run
    keeps to say why it failed, in memory O(error types) however many calls it makes."""

    def __init__(self) -> None:
        self.failed = 0
        self._counts: dict[str, int] = {}
        self._first: dict[str, str] = {}

    def add(self, error: BaseException) -> None:
        name = type(error).__name__
        self.failed += 1
        self._counts[name] = self._counts.get(name, 0) + 1
        self._first.setdefault(name, str(error) or repr(error))

    def counts(self) -> list[ErrorCount]:
        """Most frequent first."""
        return [ErrorCount(name, count, self._first[name])
                for name, count in sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def lines(self) -> list[str]:
        """One readable line per error type: ``  3 × Timeout: first message``."""
        return [f"  {count}" for count in self.counts()]


def errors_by_type(results: Iterable[Result[Any]]) -> list[ErrorCount]:
    """Failures grouped by error class name, most frequent first; each with its first message.

    >>> from greenagents.errors import AuthError
    >>> errors_by_type([Result(error=AuthError("bad key")), Result(value=1)])
    [ErrorCount(type='AuthError', count=1, first_message='bad key')]
    """
    tally = ErrorTally()
    for result in results:
        if result.error is not None:
            tally.add(result.error)
    return tally.counts()


class CallsFailedWarning(UserWarning):
    """A batch, each or stream ended with failed calls; the message groups them by error type.

    Silence it for one run with ``warn_failures=False``, or everywhere with
    ``warnings.simplefilter("ignore", ga.CallsFailedWarning)``.
    """


def warn_failures(tally: ErrorTally, calls: int, *, why: str = "", stacklevel: int = 2) -> None:
    """One warning for a run that had failures: how many, of which types, the first message of
    each, and ``why`` the run stopped early if it did."""
    if not tally.failed:
        return
    head = f"greenagents: {tally.failed:,} of {calls:,} calls failed{why}:"
    hint = "  (Result.error holds each; pass warn_failures=False to silence this warning)"
    warnings.warn("\n".join([head, *tally.lines(), hint]), CallsFailedWarning,
                  stacklevel=stacklevel + 1)


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]  # nearest rank


@dataclass(frozen=True)
class Summary:
    """Totals over a list of Results; ``str()`` is a short readable report.

    ``cost_usd`` sums the calls whose cost is known and is ``None`` when none is;
    ``cost_unknown`` counts calls with a usage but no price (an unknown model).
    """

    calls: int
    ok: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cost_unknown: int
    p50_s: float | None
    p95_s: float | None
    errors: list[ErrorCount] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __str__(self) -> str:
        parts = [f"{self.calls:,} calls: {self.ok:,} ok, {self.failed:,} failed"]
        if self.total_tokens:
            parts.append(f"tokens {self.prompt_tokens:,} + {self.completion_tokens:,}")
        if self.cost_usd is not None:
            unknown = f" (+{self.cost_unknown} unpriced)" if self.cost_unknown else ""
            digits = 4 if self.cost_usd >= 0.01 or not self.cost_usd else 6
            parts.append(f"cost ${self.cost_usd:.{digits}f}{unknown}")
        if self.p50_s is not None and self.p95_s is not None:
            parts.append(f"p50 {self.p50_s:.2f} s, p95 {self.p95_s:.2f} s")
        lines = ["; ".join(parts)]
        lines += [f"  {count}" for count in self.errors]
        return "\n".join(lines)


def _shorten(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def summary(results: Iterable[Result[Any]]) -> Summary:
    """Totals of ``results``: ok/failed, tokens, cost, p50/p95 duration, errors by type.

    >>> import greenagents as ga
    >>> ga.summary(ga.each([1, 2, 0], lambda n: 1 / n)).errors[0].type
    'ZeroDivisionError'
    """
    listed = list(results)
    durations = sorted(r.duration_s for r in listed)
    costs = [r.cost_usd for r in listed if r.cost_usd is not None]
    usages = [r.usage for r in listed if r.usage is not None]
    ok = sum(r.ok for r in listed)
    return Summary(
        calls=len(listed), ok=ok, failed=len(listed) - ok,
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cost_usd=sum(costs) if costs else None,
        cost_unknown=sum(1 for r in listed if r.cost_usd is None and r.usage and r.usage.total_tokens),
        p50_s=_percentile(durations, 0.50), p95_s=_percentile(durations, 0.95),
        errors=errors_by_type(listed))
