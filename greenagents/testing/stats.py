"""Counters a test reads back to assert what the simulator saw (``GET /_sim/stats``).

``peak_in_flight`` is the number that proves a client's concurrency bound: 50 concurrent calls
with 0.5 s latency show a peak of 50, a pool of 10 shows 10.

>>> stats = Stats()
>>> stats.begin(); stats.begin(); stats.end("200"); stats.snapshot()["peak_in_flight"]
2
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


class Stats:
    """Per-simulator request counters. Only the server's own thread writes them."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter; requests in flight now stay counted as in flight."""
        self.requests = 0
        self.peak_in_flight = self.in_flight
        self.by_status: Counter[str] = Counter()
        self.by_fault: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.first_tokens: dict[str, float] = {}

    def first_token(self, prompt: str) -> None:
        """A stream's first token goes out now: ``time.monotonic()`` by its last user message
        (``GET /_sim/first_tokens``; the clock is the machine's, so a client in another process
        can subtract it from its own). The first 100,000 streams since a reset are kept."""
        if len(self.first_tokens) < 100_000:
            self.first_tokens[prompt] = time.monotonic()

    def begin(self) -> None:
        """A request to a provider endpoint arrived."""
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def end(self, status: str) -> None:
        """It finished with this status (``"dropped"`` when the connection was cut instead,
        ``"disconnected"`` when the client hung up mid-answer)."""
        self.in_flight -= 1
        self.by_status[status] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy: requests, in_flight, peak_in_flight, by_status, by_fault, by_model,
        prompt_tokens, completion_tokens."""
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
            "by_model": dict(self.by_model),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
