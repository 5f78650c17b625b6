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

#: Moments of each kind kept in :attr:`Stats.timeline` (and first tokens) since a reset.
TIMELINE_MAX = 100_000


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
        self.timeline: dict[str, list[float]] = {"accepted": [], "arrived": [], "answered": []}
        self.cpu_at_reset = time.process_time()

    def first_token(self, prompt: str) -> None:
        """A stream's first token goes out now: ``time.monotonic()`` by its last user message
        (``GET /_sim/first_tokens``; the clock is the machine's, so a client in another process
        can subtract it from its own). The first :data:`TIMELINE_MAX` streams since a reset are kept."""
        if len(self.first_tokens) < TIMELINE_MAX:
            self.first_tokens[prompt] = time.monotonic()

    def mark(self, event: str) -> None:
        """``event`` ("accepted": a connection; "arrived", "answered": a completion request)
        happens now: its ``time.monotonic()`` goes in :attr:`timeline` (``GET /_sim/timeline``),
        the machine's clock, so a benchmark can place the server's moments on its own time line
        (when did 10,000 connections get accepted, their requests read, their answers sent).
        The first :data:`TIMELINE_MAX` of each since a reset are kept."""
        moments = self.timeline[event]
        if len(moments) < TIMELINE_MAX:
            moments.append(time.monotonic())

    def moments(self) -> dict[str, Any]:
        """``GET /_sim/timeline``: :attr:`timeline`, and ``cpu_s``, the CPU seconds this process
        spent since the reset (the simulator's own share of a benchmark on shared cores, when it
        runs in a process of its own: ``Simulator.start_process()``)."""
        return {**self.timeline, "cpu_s": time.process_time() - self.cpu_at_reset}

    def begin(self) -> None:
        """A request to a provider endpoint arrived."""
        self.mark("arrived")
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def end(self, status: str) -> None:
        """It finished with this status (``"dropped"`` when the connection was cut instead,
        ``"disconnected"`` when the client hung up mid-answer)."""
        self.mark("answered")
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
