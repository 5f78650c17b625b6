"""Rate limits learned from the provider's headers: slow down *before* the 429s.

Users rarely know their tier, so ``ga.rate_limit(...)`` is usually unset; yet every answer of
OpenAI and Anthropic says how much of the budget is left and when it is full again
(:mod:`greenagents.ratelimit_headers`). Where no rate limit is configured, calls to that model
are paced by what the provider stated: once the stated remaining budget is spent, calls wait
(without their slot) until the reset, and then adopt the stated limit until the provider speaks
again. A ``ga.rate_limit`` you set is used as it is for what it sets (``rpm``: requests; ``tpm``:
tokens): the headers never loosen it. ``ga.configure(learn_rate_limits=False)`` turns learning off.

How the budget is counted: each request takes a ticket (requests: 1; tokens: the prompt estimate
plus ``max_tokens``), numbered per model endpoint. An answer saying "``remaining`` left" while
its request held ticket ``t`` means nothing past ticket ``t + remaining`` may go before the reset.
Requests still in flight were counted by the provider before they answer, so tickets, not
answers, are what this ceiling is measured against; that is what keeps 200 calls in flight from
overshooting a budget their answers have not reported yet. The latest answer sets the ceiling
(requests sent together reach the provider in a slightly different order, and the lowest
ceiling of a first wave would waste that difference for the whole window), until one says
nothing is left: that is believed until the reset. Before the first answer nothing is known:
the first requests go unpaced.

Learning is per (provider, base URL, model), in the storage 429 cooldowns use: Redis once
``ga.rate_limit(..., storage="redis://...")`` or ``greenagents.limits.share("redis://...")``
names one (Celery workers: ``GREENAGENTS_RATE_LIMITS``), so workers share what they learned and
draw from one ticket count; in-process otherwise. A server that states nothing (a local model)
costs one counter increment per request. A 429 whose headers show a budget at 0 also waits out
its ``retry-after`` when that is later than the reset; a 429 that shows budget left (a busy
shard) changes nothing here.

>>> import greenagents as ga
>>> ga.configure(learn_rate_limits=False).learn_rate_limits
False
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from limits.storage import RedisStorage

from . import hooks, limits, slots, state
from .config import settings
from .errors import RateLimited, Timeout
from .http import retry_after_seconds
from .ratelimit_headers import DIMENSIONS, parse

__all__ = ["Answer", "Learned", "Ticket", "before_request", "clear", "learned"]

T = TypeVar("T")
Record = dict[str, float]  # "<dimension>.<field>" -> number: the shape a Redis hash stores
_TOKENS = frozenset(DIMENSIONS) - {"requests"}
_DEFAULT_SPAN_S = 60.0  # how long an adopted limit lasts before the provider says more: a minute
_LONGEST_WAIT = 10  # × retry_after_max: a per-minute budget is waited for, a daily one is not


@dataclass(frozen=True)
class Learned:
    """One budget as learned: the provider's ``limit`` (None: not stated), the ``left`` before
    its reset (estimated: stated remaining minus what was sent since), and ``reset_s``."""

    limit: int | None
    left: float
    reset_s: float


# ---------------------------------------------------------------- the arithmetic, on a Record

class _Fields(NamedTuple):
    """A dimension's entries in a Record: what was sent (the ticket count), the ceiling, when it
    resets, the stated limit, the longest reset stated, and whether it was stated spent."""

    seq: str
    ceiling: str
    until: str
    limit: str
    span: str
    spent: str


_FIELDS = {dim: _Fields(*(f"{dim}.{name}" for name in _Fields._fields)) for dim in DIMENSIONS}


def _take(record: Record, costs: Callable[[set[str]], dict[str, float]], skip: set[str],
          now: float) -> tuple[float, dict[str, float]]:
    """Count one request in ``record``: ``(0.0, its ticket numbers)``, or ``(seconds to wait,
    {})`` when it does not fit. ``costs`` prices it in the dimensions the provider stated (just
    "requests" before it spoke), less those in ``skip`` (configured limits pace those)."""
    stated = {dim for dim, f in _FIELDS.items() if f.ceiling in record} or {"requests"}
    priced = costs(stated - skip)
    wait = 0.0
    for dim, cost in priced.items():
        f = _FIELDS[dim]
        seq, until, limit = record.get(f.seq, 0.0), record.get(f.until, 0.0), record.get(f.limit)
        if 0 < until <= now and limit:  # past the reset: the budget is full again, for a while
            record[f.ceiling], record[f.spent] = seq + limit, 0.0
            record[f.until] = until = now + record.get(f.span, _DEFAULT_SPAN_S)
        ceiling = record.get(f.ceiling)
        cost = min(cost, limit) if limit else cost  # larger than the whole budget: goes alone
        if until > now and ceiling is not None and seq + cost > ceiling:
            wait = max(wait, until - now)
    if wait:
        return wait, {}
    numbers = {}
    for dim, cost in priced.items():
        f = _FIELDS[dim]
        numbers[dim] = record[f.seq] = record.get(f.seq, 0.0) + cost
    return 0.0, numbers


def _observe(record: Record, status: int, headers: Mapping[str, str], tickets: Mapping[str, float],
             now: float) -> None:
    """Lower the ceilings to what ``headers`` state; ``tickets``: the request's ticket numbers."""
    retry_after = retry_after_seconds(headers) if status == 429 else None
    for dim, reading in parse(headers, now=now).items():
        f = _FIELDS[dim]
        ceiling = tickets.get(dim, record.get(f.seq, 0.0)) + reading.remaining
        until = now + reading.reset_s
        if retry_after and reading.remaining == 0:
            until = max(until, now + retry_after)
        spent = float(reading.remaining == 0)
        if record.get(f.until, 0.0) > now and f.ceiling in record:
            until = max(until, record[f.until])
            spent = max(spent, record.get(f.spent, 0.0))
            if spent:  # the provider said "nothing left": believed until the reset
                ceiling = min(ceiling, record[f.ceiling])
        record[f.ceiling], record[f.until], record[f.spent] = ceiling, until, spent
        record.setdefault(f.seq, 0.0)
        if reading.limit:
            record[f.limit] = float(reading.limit)
        record[f.span] = max(reading.reset_s, record.get(f.span, 0.0))


# ---------------------------------------------------------------- where the Record lives

class Learning:
    """One client's learning in this process: the records (when the limits storage is memory),
    the requests sent to endpoints that stated nothing yet (counted without a record: the cheap
    path for servers that send no rate-limit headers; the first statement starts from it), and
    one Redis update at a time (so 200 greenlets hold one connection, not 200)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.redis_lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.sent: dict[str, int] = {}
        self.warned = False


def _mine() -> Learning:
    return state.current().part(Learning)


_PREFIX = "greenagents/learned/"
_EXPIRY_S = 24 * 3600


def _update(key: str, change: Callable[[Record], T], default: T) -> T:
    """Apply ``change`` to ``key``'s record atomically: in this process, or in the shared Redis
    (optimistic: WATCH, read, MULTI, write; again if another process wrote in between; one update
    at a time per process, so 200 greenlets hold one connection, not 200). A Redis that fails
    warns once and yields ``default``: pacing is lost, never a call."""
    storage, mine = limits.shared_storage(), _mine()
    if not isinstance(storage, RedisStorage):
        with mine.lock:
            record = mine.records.get(key)
            if record is None:
                record = mine.records[key] = {_FIELDS["requests"].seq: float(mine.sent.pop(key, 0))}
            return change(record)
    from redis.exceptions import RedisError, WatchError

    name = _PREFIX + key
    try:
        with mine.redis_lock, storage.storage.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    record = {k.decode(): float(v) for k, v in pipe.hgetall(name).items()}
                    result = change(record)
                    pipe.multi()
                    if record:
                        pipe.hset(name, mapping=record)
                        pipe.expire(name, _EXPIRY_S)
                    pipe.execute()
                    return result
                except WatchError:
                    continue
    except RedisError as exc:
        if not mine.warned:
            mine.warned = True
            warnings.warn(f"greenagents learned limits: Redis failed ({type(exc).__name__}: {exc});"
                          " calls go unpaced by the providers' headers until it is back",
                          RuntimeWarning, stacklevel=3)
        return default


def _read(key: str) -> Record:
    storage, mine = limits.shared_storage(), _mine()
    if not isinstance(storage, RedisStorage):
        with mine.lock:
            return dict(mine.records.get(key, {}))
    return _update(key, dict, {})  # (a read through the same path: same lock, same warning)


def learned(key: str) -> dict[str, Learned]:
    """What was learned for ``key`` (``"<provider>@<base URL>/<model>"``), by dimension.

    >>> learned("openai@http://127.0.0.1:9/v1/never-called")
    {}
    """
    record, now = _read(key), time.time()
    found = {}
    for dim in DIMENSIONS:
        if f"{dim}.ceiling" in record and record[f"{dim}.until"] > now:
            limit = record.get(f"{dim}.limit")
            found[dim] = Learned(None if limit is None else int(limit),
                                 record[f"{dim}.ceiling"] - record[f"{dim}.seq"],
                                 record[f"{dim}.until"] - now)
    return found


def clear() -> None:
    """Forget what the current client learned in this process; Redis entries expire a day after
    their last use."""
    mine = _mine()
    with mine.lock:
        mine.records.clear()
        mine.sent.clear()


# ---------------------------------------------------------------- the calls' side

class Answer(Protocol):
    """What :meth:`Ticket.observe` reads: an :class:`~greenagents.http.HttpResponse`, or a
    stream's :class:`~greenagents.http_stream.ByteStream` once its headers are in."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


_STATED = ("x-ratelimit-", "anthropic-ratelimit-")  # the headers' prefixes (lower case)


class Ticket(NamedTuple):  # a tuple: one per request, made in ~0.2 µs (a dataclass: ~1 µs)
    """A request's place in its endpoint's count; hand its answer to :meth:`observe`."""

    key: str
    numbers: Mapping[str, float]

    def observe(self, response: Answer) -> None:
        """Learn from ``response``'s rate-limit headers (any status); nothing if it has none."""
        if not self.key or not any(map(_states_limits, response.headers)):
            return
        _update(self.key, lambda record: _observe(record, response.status, response.headers,
                                                 self.numbers, time.time()), None)


_UNPACED = Ticket("", {})


def _states_limits(name: str) -> bool:
    return name.startswith(_STATED)


class _Costs:
    """What one request costs in each dimension; the prompt is estimated once, when needed."""

    def __init__(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None):
        self.messages, self.max_tokens = messages, max_tokens
        self.prompt: float | None = None

    def __call__(self, dims: set[str]) -> dict[str, float]:
        if not dims & _TOKENS:
            return dict.fromkeys(dims, 1.0)
        if self.prompt is None:
            self.prompt = float(limits.estimate_tokens(self.messages))
        answer = float(self.max_tokens or 0)
        worth = {"requests": 1.0, "tokens": self.prompt + answer, "input_tokens": self.prompt,
                 "output_tokens": max(answer, 1.0)}
        return {dim: worth[dim] for dim in dims}


def before_request(provider: str, key: str, model: str, messages: Sequence[Mapping[str, Any]],
                   *, max_tokens: int | None = None, until: float | None = None) -> Ticket:
    """Wait until a request to ``key`` (``"<provider>@<base URL>/<model>"``) fits what the
    provider stated, then count it; the :class:`Ticket` goes with its answer.

    ``until`` (``time.monotonic()``) is the call's deadline: a wait past it raises
    :class:`~greenagents.errors.Timeout` at once. A wait longer than ten times
    ``retry_after_max`` (an hourly or daily budget spent) raises a
    :class:`~greenagents.errors.RateLimited` that is not retried, instead of parking the call.
    """
    if not settings().learn_rate_limits:
        return _UNPACED
    mine = _mine()
    if key not in mine.records and (limits.local() or not isinstance(limits.shared_storage(),
                                                                     RedisStorage)):
        sent = mine.sent[key] = mine.sent.get(key, 0) + 1  # nothing stated: count, no waiting
        return Ticket(key, {"requests": float(sent)})
    skip: set[str] = set()
    for budget in limits.configured(provider, model):
        skip |= ({"requests"} if budget.rpm else set()) | (_TOKENS if budget.tpm else set())
    costs = _Costs(messages, max_tokens)
    while True:
        unpaced: tuple[float, dict[str, float]] = (0.0, {})
        wait, numbers = _update(key, lambda record: _take(record, costs, skip, time.time()), unpaced)
        if not wait:
            return Ticket(key, numbers) if numbers else _UNPACED
        if wait > _LONGEST_WAIT * settings().retry_after_max:  # an hourly or daily budget
            refused = RateLimited(
                f"{key} said its rate limit is spent for {wait:.0f} s more; not waiting that long "
                f"(over {_LONGEST_WAIT}× retry_after_max={settings().retry_after_max:g}s): try "
                "later, or raise retry_after_max", provider=provider, retry_after=wait)
            refused.retryable = False
            raise refused
        if until is not None and time.monotonic() + wait > until:
            raise Timeout(f"{key} said its rate limit is spent for {wait:.1f} s more, past the "
                          "call's deadline; raise Retry(deadline=...) or slow down",
                          provider=provider)
        with hooks.waiting("rate_limit", key):
            slots.sleep(min(wait, 1.0))
