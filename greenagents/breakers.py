"""Circuit breakers: stop sending to a model endpoint that keeps failing, so fallbacks go at once.

On by default (``breaker_failures=5``); ``ga.configure(breaker_failures=None)`` turns them off.
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
endpoint failing 10 % of the time show runs of 500s before the first success — and a naive counter
would open. So: a failure counts only if its attempt started after the previous counted failure
arrived (failures of attempts already in flight add nothing); a streak that reaches
``breaker_failures`` opens only once every attempt this process started before the failure that
reached it has ended without an answer (a success still on its way ends the streak instead; an
endpoint that never answered this process opens at once); and an
attempt whose end says nothing of the endpoint — no request went out (a cooldown or a rate limit
outlasted the call's deadline), or its timeout was cut short by the call's deadline — is not
counted. A dead endpoint still opens after ``breaker_failures`` rounds of attempts; a flaky one is
reset by its successes (tested with 1,000 calls, 200 at once, against 10 % of 5xx, resets, hangs
and broken bodies: it stays closed).

``ga.configure(breaker_failures=None)`` turns them off. The counters live in the
``limits`` storage that 429 cooldowns use, so once ``ga.rate_limit(..., storage="redis://...")``
(or ``greenagents.limits.share``) points workers at one Redis, they share their breakers too
(in-memory otherwise, one set per :class:`~greenagents.Client`); which attempts are still in
flight each process knows for itself.

>>> import greenagents as ga
>>> ga.configure(breaker_failures=3, breaker_cooloff=10).breaker_failures
3
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter

from . import limits, state
from .config import settings
from .errors import CircuitOpen, ConnectionFailed, OutputError, ProviderError, ServerError, Timeout

__all__ = ["after", "before"]

# Failures of the endpoint itself; anything else it answered shows it is up.
_BREAKING = (ServerError, ConnectionFailed, Timeout)


class Streaks:
    """One client's evidence per scope, in this process: when the last counted failure arrived,
    when the attempt whose failure brought the streak to the threshold started, the start times
    of the attempts in flight, and whether it ever answered (see the module's pitfall)."""

    def __init__(self) -> None:
        self.last_counted: dict[str, float] = {}
        self.front: dict[str, float] = {}
        self.in_flight: dict[str, Counter[float]] = {}
        self.answered: set[str] = set()
        # scopes whose counters may be set in a local storage: the others (every endpoint that
        # has not failed lately) skip reading them on each attempt (about 5 µs of ~15)
        self.marked: set[str] = set()


def _answered(error: BaseException | None) -> bool:
    """Whether the endpoint itself answered (a success, a 4xx, a 429, an invalid answer)."""
    return error is None or (isinstance(error, (ProviderError, OutputError))
                             and not isinstance(error, CircuitOpen))


@functools.lru_cache(maxsize=1024)
def _keys(scope: str) -> tuple[str, str, str, str]:
    return (f"greenagents/breaker/failures/{scope}", f"greenagents/breaker/open/{scope}",
            f"greenagents/breaker/probe/{scope}", f"greenagents/breaker/tripped/{scope}")


def before(scope: str, started: float) -> bool:
    """Raise CircuitOpen if ``scope``'s breaker is open (or half-open with its probe out);
    True when this attempt, starting at ``started`` (``time.monotonic()``), is the probe."""
    threshold = settings().breaker_failures
    if threshold is None:
        return False
    streaks = state.current().part(Streaks)
    if scope not in streaks.marked and limits.local():  # no failure lately: closed, no probe
        _count_in(streaks, scope, started)
        return False
    storage = limits.shared_storage()
    _, opened, probe, tripped = _keys(scope)
    if storage.get(opened):
        raise CircuitOpen(f"{scope}: {threshold} failures in a row; not sending for "
                          f"{settings().breaker_cooloff:g}s so fallbacks are tried at once "
                          "(ga.configure(breaker_failures=None) turns breakers off)",
                          provider=scope.partition("/")[0])
    # Half-open (it opened, and the cool-off is over): the first attempt probes, others wait.
    probing = bool(storage.get(tripped))
    if probing and storage.incr(probe, math.ceil(settings().timeout) + 1) != 1:
        raise CircuitOpen(f"{scope}: half-open, a probe request is testing it; try again shortly",
                          provider=scope.partition("/")[0])
    _count_in(streaks, scope, started)
    return probing


def _count_in(streaks: Streaks, scope: str, started: float) -> None:
    counts = streaks.in_flight.get(scope)
    if counts is None:
        counts = streaks.in_flight[scope] = Counter()
    counts[started] += 1


def _open(scope: str) -> None:
    streaks = state.current().part(Streaks)
    streaks.front.pop(scope, None)
    streaks.marked.add(scope)
    _, opened, _, tripped = _keys(scope)
    storage, cooloff = limits.shared_storage(), settings().breaker_cooloff
    storage.clear(opened)
    storage.incr(opened, math.ceil(cooloff))  # whole seconds, as Redis keeps them
    storage.clear(tripped)
    storage.incr(tripped, math.ceil(4 * cooloff) + 60)


def after(scope: str, error: BaseException | None, probe: bool, started: float, *,
          evidence: bool = True) -> None:
    """Record how an attempt at ``scope``, started at ``started`` (``time.monotonic()``), ended
    (``error`` None: it answered). ``evidence=False``: its end says nothing of the endpoint (no
    request went out, or its timeout was cut short by the call's deadline); it is not counted."""
    threshold = settings().breaker_failures
    if threshold is None:
        return
    streaks = state.current().part(Streaks)
    in_flight = streaks.in_flight.get(scope)
    if in_flight is not None and in_flight[started]:
        in_flight[started] -= 1
        if not in_flight[started]:
            del in_flight[started]
    storage = limits.shared_storage()
    failures, _, probe_key, tripped = _keys(scope)
    now = time.monotonic()
    if probe:
        storage.clear(probe_key)
    breaking = isinstance(error, _BREAKING)
    if evidence and breaking and (probe or started >= streaks.last_counted.get(scope, -math.inf)):
        streaks.last_counted[scope] = now
        streaks.marked.add(scope)
        if storage.incr(failures, math.ceil(4 * settings().breaker_cooloff) + 60) >= threshold:
            streaks.front.setdefault(scope, started)  # the failure that reached it: wait for older ones
        if probe:
            _open(scope)
            return
    elif evidence and not breaking and _answered(error):
        streaks.front.pop(scope, None)
        streaks.answered.add(scope)
        if scope not in streaks.marked and limits.local():
            return  # nothing to reset (the common case)
        if probe or storage.get(failures):
            storage.clear(failures)  # the endpoint answered: the streak is over
        if probe:
            storage.clear(tripped)  # closed again
        if not storage.get(tripped) and not storage.get(_keys(scope)[1]):
            streaks.marked.discard(scope)
        return
    # Closed with a streak at the threshold: it opens once nothing older than the failure that
    # reached it can still answer — at once if the endpoint never answered this process (half-open,
    # the probe alone decides).
    if storage.get(failures) >= threshold and not storage.get(tripped) and (
            scope not in streaks.answered
            or not any(begun < streaks.front.get(scope, math.inf) for begun in in_flight or ())):
        _open(scope)
