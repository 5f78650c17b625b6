"""Retrying a call: which errors, how long to wait, and waiting without holding a slot.

Built on tenacity and composable with it: :class:`Retry` is a small policy that *produces* a
``tenacity.Retrying``; ``backoff=`` and ``on=`` accept tenacity strategies, and an agent's
``retries`` may be a ``tenacity.Retrying`` of your own. Whatever the policy, the backoff sleeps
through :func:`greenagents.slots.sleep`: cooperative, and **the call's concurrency slot goes to
another call while it waits**, so a retry-heavy batch is not stalled by its own backoffs.

Retried: :class:`~greenagents.errors.ProviderError` subclasses marked ``retryable`` (connection
failures, timeouts, 408, 409, 429, 5xx, 529) and invalid structured answers (re-asked at once).
Never retried: 400/401/403/404/422, input and config errors, programming errors, and the
``BaseException`` family (``GreenletExit``, the caller's ``gevent.Timeout``, ``KeyboardInterrupt``).
A ``Retry-After`` is the wait when the provider sends one; one longer than ``retry_after_max``
fails the call at once with a :class:`~greenagents.errors.RateLimited` that says so.

>>> from greenagents import Retry
>>> Retry(max=5, backoff="fixed", base=0.1, jitter=False).retrying().stop.max_attempt_number
6
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import tenacity
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from . import hooks, slots
from .config import check_seconds, settings
from .errors import CircuitOpen, ConfigError, GreenAgentsError, QuotaExceeded, RateLimited, RetryAfterTooLong

__all__ = ["Attempts", "Policy", "Retry", "RetryPolicy", "call_with_retries", "policy_for",
           "retryable", "with_fallbacks"]

T = TypeVar("T")
E = TypeVar("E")
Backoff = Literal["exponential", "fixed", "none"] | wait_base


def retryable(exc: BaseException) -> bool:
    """Whether trying again can help: our errors say so themselves; nothing else is retried."""
    return isinstance(exc, GreenAgentsError) and bool(getattr(exc, "retryable", False))


class wait_retry_after(wait_base):  # tenacity's naming, so it reads like its peers
    """Wait what the provider asked for (``Retry-After``), else what ``fallback`` says."""

    def __init__(self, fallback: wait_base):
        self.fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after
        if exc is not None and getattr(exc, "reask", False):
            return 0.0  # an invalid answer is re-asked at once: waiting cannot fix it
        return float(self.fallback(retry_state))


class stop_before_deadline(stop_base):  # tenacity's naming, so it reads like its peers
    """``stop_before_delay`` on the call's own clock: stop when the next wait would end past
    ``seconds`` after the call began — its first attempt included, which may run before tenacity
    does (see :class:`Attempts`). Used alone, it is tenacity's ``stop_before_delay``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        call = Attempts.of(retry_state)
        started = call.started if call is not None else retry_state.start_time
        return time.monotonic() - started + retry_state.upcoming_sleep >= self.seconds


@dataclass(frozen=True, repr=False)
class Retry:
    """A retry policy: up to ``max`` retries after the first attempt.

    ``backoff`` is ``"exponential"`` (``base`` × 2ⁿ, capped at ``cap``), ``"fixed"`` (``base``),
    ``"none"``, or any tenacity wait (``tenacity.wait_fixed(1) + tenacity.wait_random(0, 1)``);
    ``jitter`` adds up to ``base`` seconds at random so retries do not arrive in lockstep.
    ``deadline`` bounds the whole call, attempts and waits included. ``on`` adds exception types
    (or a tenacity retry strategy) to retry besides our retryable errors. Frozen: equal policies
    are one (they share one cached ``tenacity.Retrying``); derive another with
    ``dataclasses.replace(policy, max=5)``.

    >>> Retry(max=0).retrying().stop.max_attempt_number
    1
    >>> Retry(max=2) == Retry(2), len({Retry(max=2), Retry(2)})
    (True, 1)
    """

    max: int = 3
    _: KW_ONLY
    backoff: Backoff = "exponential"
    base: float = 0.5
    cap: float = 8.0
    jitter: bool = True
    deadline: float | None = None
    on: tuple[type[BaseException], ...] | retry_base | None = None
    retry_after_max: float | None = None

    def __post_init__(self) -> None:
        if self.max < 0:
            raise ValueError(f"Retry(max={self.max}): max is the number of retries, 0 or more")
        if isinstance(self.backoff, str) and self.backoff not in ("exponential", "fixed", "none"):
            raise ValueError(f"Retry(backoff={self.backoff!r}): use 'exponential', 'fixed', "
                             "'none' or a tenacity wait strategy")
        object.__setattr__(self, "deadline", check_seconds(self.deadline, "Retry.deadline"))

    def __repr__(self) -> str:
        return (f"Retry(max={self.max}, backoff={self.backoff!r}, base={self.base}, cap={self.cap}, "
                f"jitter={self.jitter}, deadline={self.deadline})")

    def _wait(self) -> wait_base:
        if isinstance(self.backoff, wait_base):
            shape: wait_base = self.backoff
        elif self.backoff == "exponential":
            shape = tenacity.wait_exponential(multiplier=self.base, max=self.cap)
        elif self.backoff == "fixed":
            shape = tenacity.wait_fixed(self.base)
        else:
            shape = tenacity.wait_none()
        if self.jitter and self.backoff != "none":
            shape = shape + tenacity.wait_random(0, self.base)
        return wait_retry_after(shape)

    def _retry(self) -> retry_base:
        ours: retry_base = tenacity.retry_if_exception(retryable)
        if isinstance(self.on, retry_base):
            return ours | self.on
        if self.on:
            return ours | tenacity.retry_if_exception_type(self.on)
        return ours

    def retrying(self) -> tenacity.Retrying:
        """This policy as a ``tenacity.Retrying`` whose sleeps release the call's slot."""
        stop: Any = tenacity.stop_after_attempt(self.max + 1)
        if self.deadline is not None:
            stop = stop | stop_before_deadline(self.deadline)
        return tenacity.Retrying(stop=stop, wait=self._wait(), retry=self._retry(),
                                 sleep=_backoff, reraise=True)


RetryPolicy = int | Retry | tenacity.Retrying | None


def _backoff(seconds: float) -> None:
    """A retry's backoff: slept without the call's slot, and told to the hooks' listeners."""
    with hooks.waiting("retry"):
        slots.sleep(seconds)

def _report_wait(state: tenacity.RetryCallState) -> None:
    """Tell the call's ``on_wait`` (see :class:`Attempts`) of the backoff about to be slept."""
    call = Attempts.of(state)
    if call is not None and call.on_wait is not None:
        call.on_wait(state.next_action.sleep if state.next_action else 0.0)


class Policy(NamedTuple):
    """A ready-to-run policy: the Retrying, the call's deadline and its Retry-After cap.

    ``tries_first`` says the first attempt may run before tenacity does (our own policies, whose
    clocks are the call's); a user's ``tenacity.Retrying`` runs every attempt, as configured.
    """

    retrying: tenacity.Retrying
    deadline: float | None
    retry_after_max: float
    tries_first: bool


def policy_for(retries: RetryPolicy) -> Policy:
    """Turn an agent's ``retries`` (None, an int, a :class:`Retry`, a ``tenacity.Retrying``) into a
    :class:`Policy` whose sleeps are cooperative and release the slot. Cached per policy and
    settings (a :class:`Retry` is frozen, so equal policies share one entry)."""
    if isinstance(retries, bool) or not isinstance(retries, (int, Retry, tenacity.Retrying,
                                                             type(None))):
        raise ConfigError(f"retries={retries!r}: use an int, ga.Retry(...) or a tenacity.Retrying")
    current = settings()
    return _policy(retries, current.retries, current.retry_after_max)


@functools.lru_cache(maxsize=256)
def _policy(retries: RetryPolicy, default_retries: int, retry_after_max: float) -> Policy:
    # keyed on the two settings it reads, not on Settings (whose api_keys dict is unhashable)
    if retries is None:
        retries = default_retries
    if isinstance(retries, int):
        retries = Retry(max=retries)
    if isinstance(retries, Retry):
        cap = retries.retry_after_max or retry_after_max
        return Policy(retries.retrying().copy(before_sleep=_report_wait), retries.deadline, cap,
                      tries_first=True)
    theirs = retries.before_sleep

    def before_sleep(state: tenacity.RetryCallState) -> None:
        _report_wait(state)
        if theirs is not None:
            theirs(state)

    return Policy(retries.copy(sleep=_backoff, reraise=True, before_sleep=before_sleep), None,
                  retry_after_max, tries_first=False)


def _refused(exc: Exception, retry_after_max: float) -> Exception:
    """``exc``, or the :class:`RetryAfterTooLong` it becomes when it is a 429 asking to wait
    longer than ``retry_after_max`` (not retried: the call fails at once, saying why)."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None \
            and exc.retry_after > retry_after_max:
        refused = RetryAfterTooLong(
            f"{exc} — the provider asked to wait {exc.retry_after:g}s, longer than "
            f"retry_after_max={retry_after_max:g}s; raise it with "
            "ga.configure(retry_after_max=...) or slow down (ga.rate_limit)",
            status=exc.status, provider=exc.provider, retry_after=exc.retry_after)
        refused.__cause__ = exc
        return refused
    return exc


class Attempts(Generic[T]):
    """One call's attempts under a :class:`Policy`: the first outside tenacity, the rest in it.

    Most calls succeed at once, so with our own policies (``tries_first``) the first attempt
    runs straight away and tenacity takes over only after a failure, replaying it as its attempt
    one: tenacity's loop costs ~35 µs and ~3 KB of greenlet stack on every call. The policy's
    ``Retrying`` is built once and shared by every concurrent call (building one costs ~50 µs);
    what is the call's own — when it started, for ``Retry(deadline=...)``, and who hears of its
    backoffs — travels as the argument tenacity passes back to its strategies
    (``retry_state.args[0]``, see :meth:`of`). tests/test_retry.py pins the tenacity behaviour
    this relies on.

    >>> Attempts(lambda: 42).run(policy_for(3))
    42
    """

    __slots__ = ("cap", "failed", "fn", "on_wait", "started")

    def __init__(self, fn: Callable[[], T], on_wait: Callable[[float], None] | None = None):
        self.fn, self.on_wait = fn, on_wait
        self.failed: Exception | None = None
        self.started = 0.0
        self.cap = 0.0

    @staticmethod
    def of(retry_state: tenacity.RetryCallState) -> Attempts[Any] | None:
        """The call a tenacity strategy is deciding for, when it runs under :meth:`run`."""
        args = retry_state.args
        return args[0] if args and isinstance(args[0], Attempts) else None

    def run(self, policy: Policy, *, failed: Exception | None = None,
            started: float | None = None) -> T:
        """The call's value; the last error raised as itself (never ``tenacity.RetryError``).

        ``failed``: the caller made the first attempt itself (at ``started``,
        ``time.monotonic()``) and it raised this; tenacity takes over from there, as if this
        had run it (an agent's common path: one attempt, no frames of ours under it).
        """
        self.cap = policy.retry_after_max
        self.started = time.monotonic() if started is None else started
        if failed is not None:
            self.failed = _refused(failed, self.cap)
        elif policy.tries_first:
            try:
                return self.fn()
            except Exception as exc:  # kills and the caller's timeouts (BaseException) pass through
                self.failed = _refused(exc, self.cap)
        return policy.retrying(Attempts._next, self)  # type: ignore[no-any-return]

    def _next(self) -> T:
        """An attempt for tenacity: the first one's error replayed, then the call again."""
        if self.failed is not None:
            failed, self.failed = self.failed, None
            raise failed
        try:
            return self.fn()
        except RateLimited as exc:
            refused = _refused(exc, self.cap)
            if refused is exc:
                raise
            raise refused from exc


def call_with_retries(fn: Callable[[], T], policy: Policy, *,
                      on_wait: Callable[[float], None] | None = None) -> T:
    """Run ``fn`` under ``policy`` (see :class:`Attempts`); ``on_wait`` hears of each backoff
    before it is slept. The last error is raised as itself.

    >>> call_with_retries(lambda: "ok", policy_for(0))
    'ok'
    """
    return Attempts(fn, on_wait).run(policy)


def with_fallbacks(chain: Sequence[tuple[str, E]], attempt: Callable[[str, E], T], policy: Policy,
                   *, on_wait: Callable[[float], None] | None = None,
                   on_model: Callable[[str], None] | None = None,
                   failed: Exception | None = None, started: float | None = None) -> T:
    """``attempt(model, endpoint)`` under ``policy`` for each model of ``chain`` in order, until
    one answers; the last error is raised. The next model is tried only for what retrying could
    not fix (a retryable error, an account out of credit, an open circuit), never for a bad
    request. ``on_model`` hears of each model before it is tried. ``failed``: the caller already
    made the first model's first attempt (at ``started``; ``on_model`` heard of it) and it raised
    this — see :meth:`Attempts.run`.

    >>> with_fallbacks([("a", 1), ("b", 2)], lambda model, n: (model, n), policy_for(0))
    ('a', 1)
    """
    error: Exception | None = None
    for model, endpoint in chain:
        if on_model is not None and failed is None:
            on_model(model)
        try:
            return Attempts(functools.partial(attempt, model, endpoint), on_wait).run(
                policy, failed=failed, started=started)
        except Exception as exc:  # kills and the caller's timeouts are BaseException: they pass
            error = exc
            if not (retryable(exc) or isinstance(exc, (QuotaExceeded, CircuitOpen))):
                break  # fallbacks are for what retrying could not fix, not for bad requests
        finally:
            failed = started = None
    assert error is not None
    raise error
