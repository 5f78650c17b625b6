"""Money budgets: ``max_cost_usd`` for a run, a process or a tenant; an attempt that could cross one
is not sent.

Three scopes, all enforced on every attempt (retries, re-asks, fallbacks included), and all that
apply at once must agree:

- a run: ``ga.batch(calls, max_cost_usd=2.0)`` (also ``each``, ``stream``, ``greenagents run
  --max-cost 2``);
- the process, or rather the client: ``ga.configure(max_cost_usd=20.0)`` for the default one,
  ``ga.Client(max_cost_usd=5.0)`` for a client of its own (each client spends from its own);
- a tenant, or anything you name: ``with ga.budget("tenant-a", max_cost_usd=5.0,
  storage="redis://..."):`` — the calls made inside (and the greenlets they start) spend from it;
  with a Redis storage, every worker using the same name spends from one shared counter.

Before an attempt is sent it *reserves* its worst case — the prompt (estimated at 4 characters a
token) plus ``max_tokens`` of answer (``DEFAULT_ANSWER_TOKENS`` when the agent sets none) at the
model's price. If what was spent plus that worst case would pass a budget's maximum, the attempt
ends as :class:`~greenagents.errors.BudgetExceeded` (never retried, no fallback tried). If only the
reservations of attempts in flight stand in the way, it waits for them (without its slot): they
usually cost less than they reserved. Otherwise it goes, and when it returns its reservation is
replaced by what it really cost. Calls in flight always finish and are counted.

**The overshoot bound**: the total spent can pass ``max_cost_usd`` only by what in-flight
attempts cost beyond their reservation — at most, summed over the attempts in flight when the
budget ran out, ``actual − reserved``. That is zero when every answer stays within ``max_tokens``
(and the prompt within its estimate); with no ``max_tokens`` it is at most ``max_concurrency ×``
the cost of an answer longer than ``DEFAULT_ANSWER_TOKENS``.

**Unknown prices**: a model missing from the price table has no cost we can promise, and an unknown
price is never counted as $0; under a budget its attempts are refused with ``BudgetExceeded``
naming ``greenagents.pricing.register_price``. Without a budget such calls run as before
(``cost_usd=None``).

A soft threshold warns once (:class:`BudgetWarning`) when a budget is ``warn_at`` (80 %) spent.
Counters live in the ``limits`` library's storage — the one rate limits use — in nano-dollars.

>>> import greenagents as ga
>>> with ga.budget("docs-example", max_cost_usd=1.0) as spend:
...     pass
>>> spend.spent_usd
0.0
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from . import hooks, limits, pricing, runs, slots, state
from .config import settings
from .errors import BudgetExceeded, ConfigError
from .result import Usage

__all__ = ["DEFAULT_ANSWER_TOKENS", "Budget", "BudgetWarning", "active", "budget", "charge", "reserve",
           "settle"]

#: Answer tokens reserved for an attempt of an agent that sets no ``max_tokens``.
DEFAULT_ANSWER_TOKENS = 1024
_NANO = 1_000_000_000  # counters are integers: nano-dollars (a small call costs ~10 µ$)
_KEEP_S = 30 * 86400  # how long a named budget's counter lives in its storage


class BudgetWarning(UserWarning):
    """A budget crossed its soft threshold (``warn_at``); calls go on until the maximum."""


class Budget:
    """A maximum in USD and the counter of what was spent (and reserved) against it."""

    def __init__(self, max_cost_usd: float, *, name: str | None = None,
                 storage: str = "memory://", warn_at: float | None = 0.8):
        if not max_cost_usd > 0:
            raise ConfigError(f"max_cost_usd must be > 0 (or None for no budget), got "
                              f"{max_cost_usd!r}")
        if warn_at is not None and not 0 < warn_at < 1:
            raise ConfigError(f"warn_at must be between 0 and 1 (or None), got {warn_at!r}")
        self.max_cost_usd, self.warn_at = max_cost_usd, warn_at
        self.name = name or f"run-{uuid.uuid4().hex[:12]}"
        self._spent = f"greenagents/budget/{self.name}/spent"
        self._reserved = f"greenagents/budget/{self.name}/reserved"
        self._storage = limits.storage_for(storage)
        self._limit = round(max_cost_usd * _NANO)
        self._warned = False
        self._lock = threading.Lock()  # gevent's when patched: waiting parks only the greenlet

    def scope(self, context: contextvars.Context) -> None:
        """Make the calls run in ``context`` (a greenlet's copy) spend from this budget too."""
        context.run(lambda: _active.set((*_active.get(), self)))

    def __repr__(self) -> str:
        return f"Budget({self.name!r}, max_cost_usd={self.max_cost_usd}, spent_usd={self.spent_usd})"

    @property
    def spent_usd(self) -> float:
        """What the finished attempts cost, in USD (attempts in flight count once they end)."""
        return int(self._storage.get(self._spent)) / _NANO

    def _room(self, nano: int) -> bool | None:
        """True: ``nano`` was reserved; False: it never will fit; None: wait for attempts in flight."""
        spent = int(self._storage.get(self._spent))
        if spent + nano > self._limit:
            return False
        # Look first, then add atomically and undo if another process took the room meanwhile:
        # two attempts never both fit. The lock keeps this process's attempts from refusing each
        # other on a transient overcount (the memory storage yields inside incr).
        with self._lock:
            if spent + int(self._storage.get(self._reserved)) + nano <= self._limit:
                if spent + int(self._storage.incr(self._reserved, _KEEP_S, nano)) <= self._limit:
                    return True
                self._storage.incr(self._reserved, _KEEP_S, -nano)
        return None

    def reserve(self, nano: int, what: str) -> None:
        """Take ``nano`` dollars from the budget, or raise BudgetExceeded and take nothing.

        While only attempts in flight stand in the way, wait (without a slot) for them to settle:
        they usually cost less than they reserved, and stopping now would leave money unspent.
        """
        give_up = time.monotonic() + 2 * settings().timeout  # a crashed worker's reservation
        while (room := self._room(nano)) is None and time.monotonic() < give_up:
            slots.sleep(0.05)
        if not room:
            raise BudgetExceeded(
                f"{what} was not sent: it could cost up to ${nano / _NANO:.6f} and budget "
                f"{self.name!r} has ${max(0.0, self.max_cost_usd - self.spent_usd):.6f} of "
                f"${self.max_cost_usd:.6g} left; raise max_cost_usd or lower max_tokens")

    def settle(self, reserved: int, actual: int) -> None:
        """Replace a reservation by what the attempt really cost; warn once past ``warn_at``."""
        total = int(self._storage.incr(self._spent, _KEEP_S, actual)) if actual else \
            int(self._storage.get(self._spent))
        self._storage.incr(self._reserved, _KEEP_S, -reserved)
        if hooks.active:
            hooks.emit(hooks.BudgetSpent(name=self.name, spent_usd=total / _NANO,
                                         max_cost_usd=self.max_cost_usd))
        if self.warn_at is not None and not self._warned and total >= self.warn_at * self._limit:
            self._warned = True
            warnings.warn(f"budget {self.name!r}: ${total / _NANO:.6f} of "
                          f"${self.max_cost_usd:.6g} spent ({self.warn_at:.0%} threshold)",
                          BudgetWarning, stacklevel=2)


_active: contextvars.ContextVar[tuple[Budget, ...]] = contextvars.ContextVar(
    "greenagents_budgets", default=())


class ClientBudgets(dict[float, Budget]):
    """One client's ``max_cost_usd`` budget, per maximum (a new maximum starts a new budget)."""


def active() -> tuple[Budget, ...]:
    """The budgets the current call spends from: the client's, then any run's or named one's."""
    limit = settings().max_cost_usd
    if limit is None:
        return _active.get()
    mine = state.current().part(ClientBudgets)
    process = mine.get(limit)
    if process is None:
        process = mine.setdefault(limit, Budget(limit, name=f"process-{runs.PROCESS_RUN_ID}"))
    return (process, *_active.get())


@contextmanager
def budget(name: str, *, max_cost_usd: float, storage: str = "memory://",
           warn_at: float | None = 0.8) -> Iterator[Budget]:
    """Spend the calls made inside from the budget ``name`` (per tenant, per user, per job...).

    With ``storage="redis://host:6379"`` every process using the same name and Redis shares it.

    >>> import greenagents as ga
    >>> with ga.budget("tenant-a", max_cost_usd=5.0) as spend:
    ...     spend.max_cost_usd
    5.0
    """
    spend = Budget(max_cost_usd, name=name, storage=storage, warn_at=warn_at)
    token = _active.set((*_active.get(), spend))
    try:
        yield spend
    finally:
        _active.reset(token)


def _worst_case(model: str, messages: Sequence[Mapping[str, Any]],
                max_tokens: int | None) -> int:
    rates = pricing.price(model)
    if rates is None:
        raise BudgetExceeded(f"{model} has no known price, so a budget cannot bound it; add one "
                             "with greenagents.pricing.register_price(...)")
    prompt = limits.estimate_tokens(messages)
    answer = max_tokens or DEFAULT_ANSWER_TOKENS
    return max(1, round((prompt * rates[0] + answer * rates[1]) * 1000))  # $/M tok -> nano-$


def reserve(budgets: Sequence[Budget], model: str, messages: Sequence[Mapping[str, Any]],
            max_tokens: int | None) -> int:
    """Reserve an attempt's worst case (nano-dollars, returned) in each of ``budgets`` (from
    :func:`active`, not empty); :func:`settle` it once the attempt ended, whatever happened. A
    budget that cannot hold it raises :class:`BudgetExceeded`, reserving nothing."""
    reserved = _worst_case(model, messages, max_tokens)
    taken: list[Budget] = []
    try:
        for spend in budgets:
            spend.reserve(reserved, f"this attempt on {model}")
            taken.append(spend)
    except BudgetExceeded:
        for spend in taken:
            spend.settle(reserved, 0)
        raise
    return reserved


def settle(budgets: Sequence[Budget], reserved: int, model: str, *billed: Usage) -> None:
    """Replace what :func:`reserve` held by what the attempt used: ``billed``, what the provider
    charged (nothing for an attempt that got no answer)."""
    cost = sum((pricing.cost_usd(model, usage) or 0.0 for usage in billed), 0.0)
    for spend in budgets:
        spend.settle(reserved, round(cost * _NANO))


@contextmanager
def charge(model: str, messages: Sequence[Mapping[str, Any]],
           max_tokens: int | None) -> Iterator[list[Usage]]:
    """Reserve an attempt's worst case in every active budget, then settle what it used.

    The caller appends the attempt's :class:`Usage` to the yielded list once the provider billed
    it; an attempt that got no answer settles at zero. (The agent's own attempts call
    :func:`reserve` and :func:`settle`, and nothing when no budget is active.)
    """
    budgets = active()
    if not budgets:
        yield []
        return
    reserved = reserve(budgets, model, messages, max_tokens)
    billed: list[Usage] = []
    try:
        yield billed
    finally:
        settle(budgets, reserved, model, *billed)
