"""Which fault, if any, a request suffers — decided reproducibly from the seed and the request.

A fault is rolled from ``seed`` + the hash of the request's model and conversation (+ the attempt
number when attempts roll independently), so the same run against the same requests fails the
same way every time — whichever client (an SDK, an agent with a schema, raw JSON) sends them.
With ``attempts=K`` only the first K tries of a given request can fail, and they all fail the same
way: a retrying client is then guaranteed to get through (the retry benchmark's "30 % of calls
are first answered 429, then succeed").

>>> plan = FaultPlan({"rate_limit": 1.0}, attempts=1, seed=0)
>>> plan.choose("body-hash", forced=None), plan.choose("body-hash", forced=None)
('rate_limit', None)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from greenagents.testing.shapes import digest

#: Every fault the simulator can inject, in the order rates are stacked when rolling.
FAULTS: tuple[str, ...] = ("rate_limit", "server_error", "overloaded", "reset", "hang",
                           "malformed", "truncated", "schema_invalid", "quota", "tool_unknown",
                           "tool_loop")

#: Faults answered at once with an HTTP error; the others wait out the latency first.
HTTP_FAULTS: frozenset[str] = frozenset({"rate_limit", "server_error", "overloaded", "quota"})

#: Faults that change the answer itself (they only show when the answer has a schema or tools).
ANSWER_FAULTS: frozenset[str] = frozenset({"schema_invalid", "tool_unknown", "tool_loop"})


def check_rates(rates: Mapping[str, float]) -> None:
    """Raise ValueError unless every name is a fault and the rates are probabilities summing ≤ 1.

    >>> check_rates({"timeout": 0.1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown fault 'timeout'; valid faults: rate_limit, server_error, overloaded, ...
    """
    for name, rate in rates.items():
        check_name(name)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate for {name!r} must be between 0 and 1, got {rate}")
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates must sum to at most 1, got {sum(rates.values()):.3f}")


def check_name(name: str) -> None:
    """Raise ValueError listing the valid faults unless ``name`` is one of them."""
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; valid faults: {', '.join(FAULTS)}")


class FaultPlan:
    """Rolls faults per request and remembers how often each request (model and conversation) was seen."""

    def __init__(self, rates: Mapping[str, float], attempts: int | None, seed: int) -> None:
        check_rates(rates)
        self.rates = [(name, rates[name]) for name in FAULTS if rates.get(name)]
        self.attempts = attempts
        self.seed = seed
        self.seen: Counter[str] = Counter()

    def choose(self, request_hash: str, forced: str | None) -> str | None:
        """The fault for this try of the request, ``forced`` (a header's choice) taking priority.

        Counts the try even when no fault results, so ``attempts`` means "the first K tries".
        """
        self.seen[request_hash] += 1
        attempt = self.seen[request_hash]
        if self.attempts is not None and attempt > self.attempts:
            return None
        if forced is not None:
            return forced
        salt = attempt if self.attempts is None else 0
        roll = digest(self.seed, "fault", request_hash, salt) / 2.0**64
        for name, rate in self.rates:
            if roll < rate:
                return name
            roll -= rate
        return None

    def reset(self) -> None:
        """Forget every request seen, so each body's attempts count from one again."""
        self.seen.clear()
