"""Circuit breakers: stop sending to a model endpoint that keeps failing, so fallbacks go at once.

Opt in with ``ga.configure(breaker_failures=5)`` (off by default: see the last pitfall).
One breaker per (provider, base URL, model). After ``breaker_failures`` consecutive
failures of the kind retrying cannot fix quickly — 5xx, connection errors, timeouts — it *opens*
for ``breaker_cooloff`` seconds (default 30, rounded up to whole seconds): attempts there fail at once with
:class:`~greenagents.errors.CircuitOpen`, which is not retried but moves the call to its next
fallback, instead of each of a thousand calls burning its retries on a dead endpoint. After the
cool-off it is *half-open*: one attempt is let through as a probe while the others still get
``CircuitOpen``; the probe's success closes the breaker, its failure opens it for another
cool-off. Any answer from the server (a 4xx, a 429, an answer that did not validate) ends a
failure streak: the endpoint is up.

Pitfall: "consecutive" is measured in *evidence*, not arrival order. Under concurrency, errors come
back at once while successes take the whole generation time, so 200 calls started together on an
endpoint failing 30 % of the time would show a long run of 500s before the first success — and a
naive counter would open. A failure counts only if its attempt started after the previous counted
failure arrived, so failures of attempts already in flight add nothing; and the streak must last
at least as long as the endpoint's recent answers take, so a success still on its way can end it.
A dead endpoint still opens after ``breaker_failures`` rounds of attempts (its retries start after
the failures they follow); a flaky one is reset by its successes (tested with 1,000 calls, 200 at
once, against 8 % of 5xx/resets/hangs: it stays closed).

Known limit, why breakers are opt-in: that fault-matrix run still opened a breaker in one run out of
several on a loaded machine (whole-attempt timeouts of hung requests arriving together), and with
no fallback an open breaker fails calls that retries would have saved.

``ga.configure(breaker_failures=None)`` turns them off again. The counters live in the ``limits``
storage that 429 cooldowns use, so once ``ga.rate_limit(..., storage="redis://...")`` points
workers at one Redis, they share their breakers too (in-memory otherwise, one set per
:class:`~greenagents.Client`).

>>> import greenagents as ga
>>> ga.configure(breaker_failures=3, breaker_cooloff=10).breaker_failures
3
"""

from __future__ import annotations

import math
import time

from . import limits, state
from .config import settings
from .errors import CircuitOpen, ConnectionFailed, OutputError, ProviderError, ServerError, Timeout

__all__ = ["after", "before"]

# Failures of the endpoint itself; anything else it answered shows it is up.
_BREAKING = (ServerError, ConnectionFailed, Timeout)


class Streaks:
    """One client's evidence per scope: when the last failure counted, when the current streak
    began, and a slowly decaying maximum of how long its answers take (see the module's pitfall)."""

    def __init__(self) -> None:
        self.last_counted: dict[str, float] = {}
        self.began: dict[str, float] = {}
        self.slowest: dict[str, float] = {}


def _answered(error: BaseException | None) -> bool:
    """Whether the endpoint itself answered (a success, a 4xx, a 429, an invalid answer)."""
    return error is None or (isinstance(error, (ProviderError, OutputError))
                             and not isinstance(error, CircuitOpen))


def _keys(scope: str) -> tuple[str, str, str]:
    return (f"greenagents/breaker/failures/{scope}", f"greenagents/breaker/open/{scope}",
            f"greenagents/breaker/probe/{scope}")


def before(scope: str) -> bool:
    """Raise CircuitOpen if ``scope``'s breaker is open (or half-open with its probe out);
    True when this attempt is the half-open probe."""
    threshold = settings().breaker_failures
    if threshold is None:
        return False
    storage = limits.shared_storage()
    failures, opened, probe = _keys(scope)
    if storage.get(opened):
        raise CircuitOpen(f"{scope}: {threshold} failures in a row; not sending for "
                          f"{settings().breaker_cooloff:g}s so fallbacks are tried at once "
                          "(ga.configure(breaker_failures=None) turns breakers off)",
                          provider=scope.partition("/")[0])
    if storage.get(failures) < threshold:
        return False
    # Half-open: the first attempt after the cool-off probes; the others wait for its verdict.
    if storage.incr(probe, math.ceil(settings().timeout) + 1) == 1:
        return True
    raise CircuitOpen(f"{scope}: half-open, a probe request is testing it; try again shortly",
                      provider=scope.partition("/")[0])


def after(scope: str, error: BaseException | None, probe: bool, started: float) -> None:
    """Record how an attempt at ``scope``, started at ``started`` (``time.monotonic()``), ended
    (``error`` None: it answered)."""
    threshold = settings().breaker_failures
    if threshold is None:
        return
    storage = limits.shared_storage()
    failures, opened, probe_key = _keys(scope)
    cooloff = settings().breaker_cooloff
    now = time.monotonic()
    streaks = state.current().part(Streaks)
    if isinstance(error, _BREAKING):
        if started < streaks.last_counted.get(scope, -math.inf) and not probe:
            return  # in flight when the last failure came: no new evidence (see the module doc)
        streaks.last_counted[scope] = now
        began = streaks.began.setdefault(scope, now)
        count = storage.incr(failures, math.ceil(4 * cooloff) + 60)  # a streak outlives a cool-off
        if probe or (count >= threshold and now - began >= streaks.slowest.get(scope, 0.0)):
            storage.clear(opened)
            storage.incr(opened, math.ceil(cooloff))  # whole seconds, as Redis keeps them
    elif _answered(error):
        streaks.slowest[scope] = max(now - started, 0.9 * streaks.slowest.get(scope, 0.0))
        streaks.began.pop(scope, None)
        if probe or storage.get(failures):
            storage.clear(failures)  # the endpoint answered: the streak is over
    if probe:
        storage.clear(probe_key)
