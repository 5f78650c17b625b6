"""Requests-per-minute and tokens-per-minute budgets per API key, like a provider enforces.

A sliding one-minute window per key: a request is admitted when both budgets still have room, and
otherwise told exactly how long until enough of the window expires — the ``Retry-After`` a
well-behaved client waits before the retry that will succeed.

>>> limiter = RateLimiter(rpm=2, tpm=None)
>>> limiter.admit("k", 10, now=0.0), limiter.admit("k", 10, now=1.0), limiter.admit("k", 10, now=2.0)
(None, None, 58.0)
>>> tokens = RateLimiter(rpm=None, tpm=25)
>>> tokens.admit("k", 20, now=0.0), tokens.admit("k", 20, now=10.0)
(None, 50.0)
"""

from __future__ import annotations

from collections import defaultdict, deque

WINDOW_S = 60.0


class _Window:
    """Admitted requests of one key in the last minute, with their running token total."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def expire(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - WINDOW_S:
            self.tokens -= self.entries.popleft()[1]

    def add(self, now: float, tokens: int) -> None:
        self.entries.append((now, tokens))
        self.tokens += tokens


class RateLimiter:
    """Sliding-window rpm/tpm limiter; ``None`` disables a budget."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.windows: defaultdict[str, _Window] = defaultdict(_Window)

    def admit(self, key: str, tokens: int, now: float) -> float | None:
        """Record the request and return None, or return the seconds to wait (nothing recorded)."""
        if self.rpm is None and self.tpm is None:
            return None
        window = self.windows[key]
        window.expire(now)
        wait = max(self._rpm_wait(window, now), self._tpm_wait(window, tokens, now))
        if wait > 0:
            return wait
        window.add(now, tokens)
        return None

    def _rpm_wait(self, window: _Window, now: float) -> float:
        count = len(window.entries)
        if self.rpm is None or count < self.rpm:
            return 0.0
        return window.entries[count - self.rpm][0] + WINDOW_S - now

    def _tpm_wait(self, window: _Window, tokens: int, now: float) -> float:
        if self.tpm is None:
            return 0.0
        excess = window.tokens + tokens - self.tpm
        if excess <= 0:
            return 0.0
        for stamp, used in window.entries:
            excess -= used
            if excess <= 0:
                return stamp + WINDOW_S - now
        return WINDOW_S  # larger than the whole budget: a minute is the honest answer

    def reset(self) -> None:
        """Empty every window."""
        self.windows.clear()
