"""Requests-per-minute and tokens-per-minute budgets per API key, like a provider enforces.

A sliding one-minute window per key: a request is admitted when both budgets still have room, and
otherwise told exactly how long until enough of the window expires — the ``Retry-After`` a
well-behaved client waits before the retry that will succeed. Every answer also states where the
key stands, in each provider's rate-limit headers (:func:`headers`): limit, remaining, and when
the window is empty again ("fully replenished").

>>> limiter = RateLimiter(rpm=2, tpm=None)
>>> limiter.admit("k", 10, now=0.0), limiter.admit("k", 10, now=1.0), limiter.admit("k", 10, now=2.0)
(None, None, 58.0)
>>> tokens = RateLimiter(rpm=None, tpm=25)
>>> tokens.admit("k", 20, now=0.0), tokens.admit("k", 20, now=10.0)
(None, 50.0)
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from datetime import datetime, timezone

WINDOW_S = 60.0


class _Window:
    """Admitted requests of one key in the last minute, with their running token total."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def expire(self, now: float, window_s: float) -> None:
        while self.entries and self.entries[0][0] <= now - window_s:
            self.tokens -= self.entries.popleft()[1]

    def add(self, now: float, tokens: int) -> None:
        self.entries.append((now, tokens))
        self.tokens += tokens


class RateLimiter:
    """Sliding-window rpm/tpm limiter; ``None`` disables a budget. ``window_s`` is the window's
    length (a minute, as the names say; shorter in tests)."""

    def __init__(self, rpm: int | None, tpm: int | None, window_s: float = WINDOW_S) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = window_s
        self.windows: defaultdict[str, _Window] = defaultdict(_Window)

    def admit(self, key: str, tokens: int, now: float) -> float | None:
        """Record the request and return None, or return the seconds to wait (nothing recorded)."""
        if self.rpm is None and self.tpm is None:
            return None
        window = self.windows[key]
        window.expire(now, self.window_s)
        wait = max(self._rpm_wait(window, now), self._tpm_wait(window, tokens, now))
        if wait > 0:
            return wait
        window.add(now, tokens)
        return None

    def _rpm_wait(self, window: _Window, now: float) -> float:
        count = len(window.entries)
        if self.rpm is None or count < self.rpm:
            return 0.0
        return window.entries[count - self.rpm][0] + self.window_s - now

    def _tpm_wait(self, window: _Window, tokens: int, now: float) -> float:
        if self.tpm is None:
            return 0.0
        excess = window.tokens + tokens - self.tpm
        if excess <= 0:
            return 0.0
        for stamp, used in window.entries:
            excess -= used
            if excess <= 0:
                return stamp + self.window_s - now
        return self.window_s  # larger than the whole budget: a minute is the honest answer

    def standing(self, key: str, now: float) -> list[tuple[str, int, int, float]]:
        """Each budget of ``key``: ``(dimension, limit, remaining, seconds until the window is
        empty)``; dimensions "requests" and "tokens", only those configured."""
        if self.rpm is None and self.tpm is None:
            return []
        window = self.windows[key]
        window.expire(now, self.window_s)
        empty_in = window.entries[-1][0] + self.window_s - now if window.entries else 0.0
        found = []
        if self.rpm is not None:
            found.append(("requests", self.rpm, max(0, self.rpm - len(window.entries)), empty_in))
        if self.tpm is not None:
            found.append(("tokens", self.tpm, max(0, self.tpm - window.tokens), empty_in))
        return found

    def reset(self) -> None:
        """Empty every window."""
        self.windows.clear()


def _go_duration(seconds: float) -> str:
    """OpenAI's reset format (a Go duration): ``"20ms"``, ``"1.5s"``, ``"1m0s"``.

    >>> _go_duration(0.0201), _go_duration(1.5), _go_duration(60.0)
    ('21ms', '1.5s', '1m0s')
    """
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(math.ceil(seconds * 1000) / 1000, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def headers(dialect: str, standing: list[tuple[str, int, int, float]],
            wall: float) -> list[tuple[str, str]]:
    """``standing`` (:meth:`RateLimiter.standing`) as ``dialect``'s headers: OpenAI's
    ``x-ratelimit-*`` (reset as a duration), else Anthropic's ``anthropic-ratelimit-*`` (reset
    as an RFC 3339 time, whole seconds rounded up, as Anthropic sends it); ``wall`` is now.

    >>> headers("openai", [("requests", 60, 59, 1.0)], 0.0)
    [('x-ratelimit-limit-requests', '60'), ('x-ratelimit-remaining-requests', '59'), \
('x-ratelimit-reset-requests', '1s')]
    >>> headers("anthropic", [("tokens", 900, 0, 0.5)], 0.0)[2]
    ('anthropic-ratelimit-tokens-reset', '1970-01-01T00:00:01Z')
    """
    found = []
    for dim, limit, remaining, empty_in in standing:
        if dialect == "anthropic":
            reset = datetime.fromtimestamp(math.ceil(wall + empty_in), timezone.utc)
            found += [(f"anthropic-ratelimit-{dim}-limit", str(limit)),
                      (f"anthropic-ratelimit-{dim}-remaining", str(remaining)),
                      (f"anthropic-ratelimit-{dim}-reset", reset.strftime("%Y-%m-%dT%H:%M:%SZ"))]
        else:
            found += [(f"x-ratelimit-limit-{dim}", str(limit)),
                      (f"x-ratelimit-remaining-{dim}", str(remaining)),
                      (f"x-ratelimit-reset-{dim}", _go_duration(empty_in))]
    return found
