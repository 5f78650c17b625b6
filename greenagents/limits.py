"""Shared rate limits: requests- and tokens-per-minute budgets, and the cooldown after 429s.

Every greenlet in the process (or, with a Redis storage, every process) draws from the same
budget, so a thousand concurrent calls do not all hammer a provider that said "slow down". The
bucket arithmetic is the ``limits`` library's (sliding-window counters); its storage is swappable:
``"memory://"`` by default, ``"redis://host:port"`` to share budgets and cooldowns across Celery
workers or machines. A call waiting for budget parks with :func:`greenagents.slots.sleep` —
cooperatively, and without holding its concurrency slot. Each :class:`~greenagents.Client` has its
own budgets, storages and cooldowns (:class:`RateLimits`, its part of :mod:`greenagents.state`);
the module functions act on the current client's.

>>> import greenagents as ga
>>> ga.rate_limit("openai", rpm=500, tpm=200_000)
RateLimit('openai', rpm=500, tpm=200000, storage='memory://')
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from . import hooks, slots, state, tokens
from .errors import Timeout

__all__ = ["RateLimit", "before_request", "clear", "configured", "cooldown", "estimate_tokens", "local",
           "observe", "rate_limit", "share", "shared_storage", "storage_for"]

log = logging.getLogger("greenagents.limits")


class RateLimits:
    """One client's budgets, ``limits`` storages and 429 cooldowns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.budgets: dict[str, RateLimit] = {}  # "provider" or "provider/model" -> its budget
        self.storages: dict[str, Storage] = {}
        self.cooldown_storage = "memory://"
        # scope -> time.time() until which its calls wait. Read on every request, so a plain dict
        # (no lock: a lost race only means one more 429) rather than the storage's locked
        # counters; with a shared storage the cooldown is also written there for the other
        # processes.
        self.cooldowns: dict[str, float] = {}
        # scope -> time.monotonic() of its last successful answer (or of its first answer). A
        # cooldown starts only when an endpoint has let nothing through for a whole Retry-After: a
        # spent budget refuses everything, while per-request 429s (a busy shard, a burst) leave
        # successes in between. Measured: pausing every call on each 429 made a batch with 30%
        # first-try 429s slower than threads; counting recent 429s misfired too, because 429s
        # come back at once and successes late.
        self.last_ok: dict[str, float] = {}

    def storage(self, url: str) -> Storage:
        found = self.storages.get(url)  # every request asks: no lock once it exists
        if found is not None:
            return found
        with self.lock:
            if url not in self.storages:
                options: dict[str, Any] = {}
                if url.startswith(("redis://", "rediss://")):
                    # redis-py's own pool refuses the 101st connection (MaxConnectionsError: half
                    # of 600 calls 200 wide failed); this one makes a greenlet wait for a free one.
                    import redis

                    options["connection_pool"] = redis.BlockingConnectionPool.from_url(
                        url, max_connections=100)
                storage = storage_from_string(url, **options)
                assert isinstance(storage, Storage), f"{url} is an asyncio storage; use a sync one"
                self.storages[url] = storage
            return self.storages[url]

    def clear(self) -> None:
        """Forget every budget and cooldown, and empty the storages (shared ones included)."""
        with self.lock:
            self.budgets.clear()
            self.cooldowns.clear()
            self.last_ok.clear()
            for storage in self.storages.values():
                storage.reset()
            self.cooldown_storage = "memory://"


def _mine() -> RateLimits:
    return state.current().part(RateLimits)


def _storage(url: str) -> Storage:
    return _mine().storage(url)


def storage_for(url: str) -> Storage:
    """The ``limits`` storage behind ``url``, one per URL per process (budgets share it too)."""
    return _storage(url)


def local() -> bool:
    """Whether 429 cooldowns, breakers and learned limits stay in this process (no rate limit or
    :func:`share` named a shared storage): what the per-request checks test first."""
    return _mine().cooldown_storage == "memory://"


def shared_storage() -> Storage:
    """The storage 429 cooldowns (and circuit breakers) use: Redis once a rate limit names one."""
    mine = _mine()
    return mine.storage(mine.cooldown_storage)


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The prompt tokens a tokens-per-minute limit charges before the answer tells: the same
    estimate as the simulator's (:func:`greenagents.tokens.estimate_messages`)."""
    return tokens.estimate_messages(messages)


class RateLimit:
    """A requests-per-minute and tokens-per-minute budget for one provider (or provider/model),
    in force for the current client from the moment it is made: ``RateLimit("openai/gpt-4o",
    rpm=60)`` and ``ga.rate_limit("openai", model="gpt-4o", rpm=60)`` do the same."""

    def __init__(self, key: str, *, rpm: int | None = None, tpm: int | None = None,
                 storage: str = "memory://"):
        if rpm is None and tpm is None:
            raise ValueError(f"rate_limit({key!r}): give rpm=, tpm= or both")
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"rate_limit({key!r}): {name} must be >= 1, got {value}")
        self.key, self.rpm, self.tpm, self.storage = key, rpm, tpm, storage
        self._limiter = SlidingWindowCounterRateLimiter(_storage(storage))
        self._requests = RateLimitItemPerMinute(rpm) if rpm else None
        self._tokens = RateLimitItemPerMinute(tpm) if tpm else None
        mine = _mine()
        with mine.lock:
            mine.budgets[key] = self
            if storage != "memory://":
                mine.cooldown_storage = storage

    def __repr__(self) -> str:
        return f"RateLimit({self.key!r}, rpm={self.rpm}, tpm={self.tpm}, storage={self.storage!r})"

    def _take(self, item: RateLimitItem, cost: int) -> None:
        cost = min(cost, item.amount)  # a single call larger than the budget still goes, alone
        while not self._limiter.hit(item, "greenagents", self.key, cost=cost):
            reset = self._limiter.get_window_stats(item, "greenagents", self.key).reset_time
            with hooks.waiting("rate_limit", self.key):
                slots.sleep(min(max(reset - time.time(), 0.01), 1.0))

    def acquire(self, tokens: int) -> None:
        """Wait until one request of ``tokens`` prompt tokens fits the budget, then spend it."""
        if self._requests is not None:
            self._take(self._requests, 1)
        if self._tokens is not None:
            self._take(self._tokens, tokens)


def rate_limit(provider: str, *, rpm: int | None = None, tpm: int | None = None,
               model: str | None = None, storage: str = "memory://") -> RateLimit:
    """Set the budget for ``provider`` (``"openai"``, ``"anthropic"``...), or one of its models.

    Budgets of a provider and of its model both apply. ``storage="redis://127.0.0.1:6379"``
    shares the budget (and the 429 cooldowns) with every process using the same Redis.

    The counting is the ``limits`` library's sliding-window counter: the previous minute counts
    by the share of it still inside the last 60 s, rounded down. That is cheap (two counters per
    budget, whatever its size, which matters for a tpm of millions) but approximate: just after
    a minute boundary one request more than ``rpm`` can go through. Set budgets a little below
    the provider's own, as you would anyway for other clients of the same key.
    """
    return RateLimit(f"{provider}/{model}" if model else provider, rpm=rpm, tpm=tpm, storage=storage)


def share(storage: str) -> None:
    """Keep 429 cooldowns, circuit breakers and learned rate limits in ``storage``
    (``"redis://host:port"``: shared by every process using it) without setting a budget."""
    mine = _mine()
    mine.storage(storage)  # a bad URL fails here, not on the first request
    with mine.lock:
        mine.cooldown_storage = storage


def clear() -> None:
    """Forget the current client's budgets and cooldowns, and empty its storages."""
    _mine().clear()


def _cooldown_key(scope: str) -> str:
    return f"greenagents/cooldown/{scope}"


def observe(scope: str, *, limited: bool, retry_after: float | None = None) -> None:
    """Note one answer of ``scope`` (an endpoint: provider and base URL), 429 or not. A 429 that
    comes when nothing got through for ``retry_after`` seconds makes every call wait it out."""
    now = time.monotonic()
    last_ok = _mine().last_ok
    if not limited:
        last_ok[scope] = now
    elif retry_after and now - last_ok.setdefault(scope, now) >= retry_after:
        cooldown(scope, retry_after)


def cooldown(scope: str, retry_after: float | None) -> None:
    """Make every call to ``scope`` wait ``retry_after`` seconds before its next request."""
    if not retry_after or retry_after <= 0:
        return
    now = time.time()
    mine = _mine()
    if mine.cooldowns.get(scope, 0.0) <= now:  # keep the earliest: do not extend it on every 429
        mine.cooldowns[scope] = now + retry_after
        log.info("cooldown.started: %s let nothing through for %gs; its calls wait as long",
                 scope, retry_after,
                 extra={"event": "cooldown.started", "scope": scope, "seconds": retry_after})
        if hooks.active:
            hooks.emit(hooks.CooldownStarted(scope=scope, seconds=retry_after))
    if mine.cooldown_storage != "memory://":
        storage = mine.storage(mine.cooldown_storage)
        if not storage.get(_cooldown_key(scope)):
            storage.incr(_cooldown_key(scope), math.ceil(retry_after))  # whole seconds in Redis


def _cooling_until(mine: RateLimits, scope: str) -> float:
    until = mine.cooldowns.get(scope, 0.0)
    if mine.cooldown_storage != "memory://":
        storage = mine.storage(mine.cooldown_storage)
        if storage.get(_cooldown_key(scope)):
            until = max(until, storage.get_expiry(_cooldown_key(scope)))
    return until


def configured(provider: str, model: str) -> list[RateLimit]:
    """The budgets set for ``provider`` and for its ``model`` (``"provider/name"`` or a name)."""
    budgets = _mine().budgets
    if not budgets:
        return []
    return [b for k in (provider, f"{provider}/{model.partition('/')[2] or model}")
            if (b := budgets.get(k)) is not None]


def before_request(provider: str, scope: str, model: str,
                   messages: Sequence[Mapping[str, Any]], *, until: float | None = None) -> None:
    """Wait out ``scope``'s cooldown and the provider's (and model's) budgets; spend the budget.

    ``until`` (``time.monotonic()``) is the call's deadline: a cooldown that would outlast it
    raises :class:`~greenagents.errors.Timeout` at once instead of sleeping past it.
    """
    mine = _mine()
    if not (mine.budgets or mine.cooldowns) and mine.cooldown_storage == "memory://":
        return  # nothing configured, nothing cooling down: the common case, one check
    while (wait := _cooling_until(mine, scope) - time.time()) > 0:
        if until is not None and time.monotonic() + wait > until:
            raise Timeout(f"{scope} is cooling down after rate limits for {wait:.1f} s more, "
                          "past the call's deadline; raise Retry(deadline=...) or slow down "
                          "(ga.rate_limit)", provider=provider)
        with hooks.waiting("cooldown", scope):
            slots.sleep(min(wait, 1.0))
    budgets = configured(provider, model)
    if budgets:
        tokens = estimate_tokens(messages)
        for budget in budgets:
            budget.acquire(tokens)
