"""Reading the providers' rate-limit headers: how much budget is left, and until when.

Both providers say, on every answer (429s included), where the caller stands against its limits:

- OpenAI: ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
  ``x-ratelimit-reset-requests`` (a Go duration: ``"1s"``, ``"6m0s"``, ``"20ms"``), the same for
  ``-tokens``;
- Anthropic: ``anthropic-ratelimit-requests-limit``, ``-remaining`` and ``-reset`` (an RFC 3339
  time), the same for ``-tokens-``, ``-input-tokens-`` and ``-output-tokens-``.

"Reset" is when the budget is back to its limit ("resets to its initial state", "fully
replenished"). This module only translates them (like :mod:`greenagents.providers`);
:mod:`greenagents.learned_limits` paces calls by them. A header that is missing or malformed is
left out, never an error: a call must not fail because a proxy mangled a header.

>>> readings = parse({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
...                   "x-ratelimit-reset-requests": "120ms"})
>>> readings["requests"]
Reading(limit=500, remaining=499, reset_s=0.12)
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["DIMENSIONS", "Reading", "parse", "parse_duration", "parse_reset"]

#: What a budget counts, in our words: requests, tokens (input and output together), and
#: Anthropic's separate input and output token budgets.
DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")

# (dimension, remaining, reset, limit) header names, OpenAI's then Anthropic's
_NAMES = [(dim, f"x-ratelimit-remaining-{dim}", f"x-ratelimit-reset-{dim}",
           f"x-ratelimit-limit-{dim}") for dim in ("requests", "tokens")] + \
         [(dim, f"anthropic-ratelimit-{name}-remaining", f"anthropic-ratelimit-{name}-reset",
           f"anthropic-ratelimit-{name}-limit") for dim, name in
          (("requests", "requests"), ("tokens", "tokens"), ("input_tokens", "input-tokens"),
           ("output_tokens", "output-tokens"))]
_SIMPLE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s)?")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Reading:
    """One budget as the provider stated it: its ``limit`` (None when not sent), what is
    ``remaining``, and ``reset_s`` seconds until it is back to its limit."""

    limit: int | None
    remaining: int
    reset_s: float


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration as OpenAI writes it (``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``), or
    in plain seconds (``"1.5"``); None when it is neither.

    >>> parse_duration("6m0s"), parse_duration("20ms"), parse_duration("1.5"), parse_duration("6x")
    (360.0, 0.02, 1.5, None)
    """
    text = text.strip()
    simple = _SIMPLE.fullmatch(text)  # "20ms", "1.5s", "7": most of what is sent
    if simple is not None:
        return float(simple[1]) * _UNIT_S[simple[2] or "s"]
    parts = _GO_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def parse_reset(text: str, *, now: float | None = None) -> float | None:
    """Seconds until an RFC 3339 time as Anthropic writes it (``"2026-11-30T09:30:00Z"``; a time
    without an offset is UTC), never negative; else a duration (:func:`parse_duration`).

    >>> parse_reset("2026-11-30T09:30:05Z", now=datetime(2026, 11, 30, 9, 30, 0,
    ...                                                  tzinfo=timezone.utc).timestamp())
    5.0
    """
    if "T" not in text:
        return parse_duration(text)
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number >= 0 else None


def parse(headers: Mapping[str, str], *, now: float | None = None) -> dict[str, Reading]:
    """The budgets ``headers`` state, by dimension (see :data:`DIMENSIONS`).

    Header names are matched case-insensitively. A budget needs at least its remaining count
    and reset time; anything else is skipped.

    >>> parse({"anthropic-ratelimit-input-tokens-limit": "40000",
    ...        "anthropic-ratelimit-input-tokens-remaining": "39000",
    ...        "anthropic-ratelimit-input-tokens-reset": "2026-11-30T09:30:06Z",
    ...        "anthropic-ratelimit-requests-remaining": "oops"},
    ...       now=datetime(2026, 11, 30, 9, 30, 0, tzinfo=timezone.utc).timestamp())
    {'input_tokens': Reading(limit=40000, remaining=39000, reset_s=6.0)}
    """
    stated = {name.lower(): headers[name] for name in headers if "ratelimit" in name.lower()}
    found: dict[str, Reading] = {}
    for dimension, remaining_name, reset_name, limit_name in _NAMES:
        if remaining_name not in stated:
            continue
        remaining = _count(stated[remaining_name])
        reset = stated.get(reset_name)
        reset_s = None if reset is None else parse_reset(reset, now=now)
        if remaining is None or reset_s is None:
            continue
        found[dimension] = Reading(_count(stated.get(limit_name)) or None, remaining, reset_s)
    return found
