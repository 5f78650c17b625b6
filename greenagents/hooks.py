"""Events of a call's life, for hooks of your own and for the OpenTelemetry/Prometheus/log integrations.

The runtime and the agents *emit* small typed events — a call started or ended, an attempt
started or ended, a wait (for a slot, a retry backoff, a provider's cooldown, a rate-limit budget)
started or ended, a cooldown began — and *listeners* receive them. A listener is any callable
taking one event; it runs in the greenlet of the call (so ``contextvars`` such as the current
OpenTelemetry span are the call's own), must be quick, and cannot fail the call: an exception
in a listener is logged once (``greenagents.hooks``, WARNING, with its traceback) and ignored.
With no listener subscribed, emitting costs one attribute check.

>>> import greenagents as ga
>>> from greenagents import hooks
>>> seen = []
>>> with hooks.subscribed(seen.append, hooks.CallEnded):
...     _ = ga.each([1, 2], abs)
>>> sorted(event.result.value for event in seen)
[1, 2]

``ga.on_call_end(fn)`` and ``ga.on_attempt(fn)`` are the two everyday shortcuts (decorators);
:func:`subscribe` takes any kinds. Every event has ``call``, the :class:`CallInfo` of the call it
belongs to (``None`` outside one), whose ``id`` ties the events of one call together and whose
``parent`` is the enclosing call (an agent called from a function that ``ga.batch`` runs).

Event kinds and where they come from (the tools loop emits the turn and tool-call kinds):

============================  ===========================================================
``CallStarted``/``CallEnded``  a call in ``batch``/``each``/``stream``, ``Agent.call``/``.stream``
``AttemptStarted``/``Ended``   one request to a model (``Ended`` has usage, error, finish)
``WaitStarted``/``WaitEnded``  ``kind``: ``"slot"``, ``"retry"``, ``"cooldown"``, ``"rate_limit"``
``CooldownStarted``            a provider's 429s made every call to ``scope`` pause
``BudgetSpent``                an attempt's cost was charged to a budget (``spent_usd`` of max)
``TurnStarted``/``TurnEnded``  one model turn of an agent with tools
``ToolCallStarted``/``Ended``  one tool function run for the model
============================  ===========================================================
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .result import Attempt, Result, Usage

__all__ = [
    "AttemptEnded", "AttemptStarted", "BudgetSpent", "CallEnded", "CallInfo", "CallStarted",
    "CooldownStarted",
    "Event", "ToolCallEnded", "ToolCallStarted", "TurnEnded", "TurnStarted", "WaitEnded",
    "WaitStarted", "active", "call_closed", "call_opened", "emit", "on_attempt", "on_call_end",
    "subscribe", "subscribed", "unsubscribe", "waiting",
]

log = logging.getLogger("greenagents.hooks")

L = TypeVar("L", bound=Callable[..., Any])


@dataclass(eq=False)
class CallInfo:
    """One call, as listeners see it. ``data`` is scratch space for listeners (keyed by their
    own names), dropped with the call, so a listener keeps per-call state without a registry."""

    id: int
    target: str
    index: int | None = None
    agent: bool = False
    parent: CallInfo | None = None
    started: float = field(default_factory=time.perf_counter)
    data: dict[str, Any] = field(default_factory=dict, repr=False)
    fn: Any = field(default=None, repr=False)
    claimed: bool = field(default=False, repr=False)


_current: ContextVar[CallInfo | None] = ContextVar("greenagents_call", default=None)
_ids = itertools.count(1)


def current() -> CallInfo | None:
    """The call the code running now belongs to, if any."""
    return _current.get()


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event; ``call`` is filled in from the running call."""

    call: CallInfo | None = field(default_factory=current)


@dataclass(frozen=True, kw_only=True)
class CallStarted(Event):
    """A call began (in its own greenlet, its concurrency slot held)."""


@dataclass(frozen=True, kw_only=True)
class CallEnded(Event):
    """A call finished; ``result`` is its :class:`~greenagents.Result` (error, usage, cost…)."""

    result: Result[Any]


@dataclass(frozen=True, kw_only=True)
class AttemptStarted(Event):
    """One request to a model is about to be sent. ``messages`` is the conversation (read it,
    never change it)."""

    number: int
    provider: str
    model: str
    messages: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, kw_only=True)
class AttemptEnded(Event):
    """One request ended. ``attempt`` is what the Result's history keeps; ``error`` the
    exception itself (None on success); ``text`` the model's raw answer."""

    attempt: Attempt
    provider: str
    error: BaseException | None = None
    usage: Usage | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    text: str | None = None


@dataclass(frozen=True, kw_only=True)
class WaitStarted(Event):
    """The call waits: ``kind`` is ``"slot"`` (for a concurrency slot), ``"retry"`` (a backoff),
    ``"cooldown"`` (a provider's 429s) or ``"rate_limit"`` (your own rpm/tpm budget)."""

    kind: str
    scope: str = ""


@dataclass(frozen=True, kw_only=True)
class WaitEnded(Event):
    """The wait of the same ``kind`` ended, after ``seconds``."""

    kind: str
    scope: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CooldownStarted(Event):
    """``scope`` (``provider@base_url``) let nothing through for a whole Retry-After: every call
    to it now waits ``seconds``."""

    scope: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class BudgetSpent(Event):
    """An attempt's cost was charged to budget ``name``: ``spent_usd`` of ``max_cost_usd`` now."""

    name: str
    spent_usd: float
    max_cost_usd: float


@dataclass(frozen=True, kw_only=True)
class TurnStarted(Event):
    """A model turn of an agent with tools (turn ``number``, from 1)."""

    number: int
    model: str


@dataclass(frozen=True, kw_only=True)
class TurnEnded(Event):
    """The turn ended, after the tools it asked for ran: ``tool_calls`` is how many the model
    asked for (0 on the final answer); ``error`` what ended the call in this turn, if anything."""

    number: int
    model: str
    tool_calls: int = 0
    error: BaseException | None = None


@dataclass(frozen=True, kw_only=True)
class ToolCallStarted(Event):
    """A tool function is about to run; ``id`` is the model's id for this tool call."""

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ToolCallEnded(Event):
    """The tool function returned (or raised ``error``, a timeout included) after ``duration_s``;
    emitted in the tool's greenlet, as is :class:`ToolCallStarted`."""

    id: str
    name: str
    duration_s: float = 0.0
    error: BaseException | None = None


Listener = Callable[[Any], object]

_lock = threading.Lock()
_listeners: dict[type[Event], tuple[Listener, ...]] = {}
_failed: set[int] = set()  # id() of listeners whose failure was logged already
active = False  # any listener at all? Emit sites test this first: the whole cost when off.


def subscribe(listener: L, *kinds: type[Event]) -> L:
    """Call ``listener(event)`` for events of ``kinds`` (every kind when none is given).

    >>> from greenagents import hooks
    >>> printer = hooks.subscribe(print, hooks.CooldownStarted)
    >>> hooks.unsubscribe(printer)
    """
    global active
    with _lock:
        for kind in kinds or _KINDS:
            if listener not in _listeners.get(kind, ()):
                _listeners[kind] = (*_listeners.get(kind, ()), listener)
        active = True
    return listener


def unsubscribe(listener: Listener) -> None:
    """Stop calling ``listener`` (for every kind); unknown listeners are ignored."""
    global active
    with _lock:
        for kind, listeners in list(_listeners.items()):
            kept = tuple(fn for fn in listeners if fn != listener)
            if kept:
                _listeners[kind] = kept
            else:
                del _listeners[kind]
        active = bool(_listeners)


@contextmanager
def subscribed(listener: Listener, *kinds: type[Event]) -> Iterator[Listener]:
    """:func:`subscribe` for the ``with`` block only."""
    subscribe(listener, *kinds)
    try:
        yield listener
    finally:
        unsubscribe(listener)


def on_call_end(fn: Callable[[CallEnded], object]) -> Callable[[CallEnded], object]:
    """Call ``fn(event)`` when any call ends; usable as a decorator.

    >>> import greenagents as ga
    >>> @ga.on_call_end
    ... def slow(event):
    ...     if event.result.duration_s > 10:
    ...         print("slow:", event.result.target)
    >>> ga.hooks.unsubscribe(slow)
    """
    return subscribe(fn, CallEnded)


def on_attempt(fn: Callable[[AttemptEnded], object]) -> Callable[[AttemptEnded], object]:
    """Call ``fn(event)`` after every request to a model (retries and fallbacks included)."""
    return subscribe(fn, AttemptEnded)


def emit(event: Event) -> None:
    """Give ``event`` to its listeners; a listener's exception is logged once, never raised."""
    for listener in _listeners.get(type(event), ()):
        try:
            listener(event)
        except Exception:
            key = id(listener)
            if key not in _failed:
                _failed.add(key)
                log.warning("hook.failed: listener %r raised on %s; the call goes on (logged "
                            "once per listener)", listener, type(event).__name__, exc_info=True,
                            extra={"event": "hook.failed", "listener": repr(listener)})


def call_opened(target: str, fn: Any = None, *, index: int | None = None,
                agent: bool = False) -> CallInfo | None:
    """Open a call for listeners and emit :class:`CallStarted`; None when nobody listens.

    An agent class run by ``ga.batch`` is opened by the runtime (which knows its index); the
    agent's own ``call`` then finds it open and does not open a second one. A function marked
    ``__greenagents_part__`` (the tool loop's tool runs) is part of the call it serves, whose
    events (``ToolCallStarted``/``Ended``) it emits itself: it opens no call.
    """
    if not active or getattr(fn, "__greenagents_part__", False):  # e.g. a tool run: a part
        return None                                                 # of the call it serves
    parent = _current.get()
    if parent is not None and fn is not None and parent.fn is fn and not parent.claimed:
        parent.claimed = True
        parent.agent = parent.agent or agent
        return None
    info = CallInfo(next(_ids), target, index, agent, parent, fn=fn)
    info.data["_token"] = _current.set(info)
    emit(CallStarted(call=info))
    return info


def call_closed(info: CallInfo | None, result: Result[Any]) -> None:
    """Emit :class:`CallEnded` for a call :func:`call_opened` opened (nothing for None)."""
    if info is None:
        return
    try:
        emit(CallEnded(call=info, result=result))
    finally:
        # closed in another context than it was opened in: nothing of ours to restore there
        with contextlib.suppress(ValueError, KeyError):
            _current.reset(info.data.pop("_token"))


class _Waiting:
    __slots__ = ("kind", "scope", "start")

    def __init__(self, kind: str, scope: str):
        self.kind, self.scope = kind, scope

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        emit(WaitStarted(kind=self.kind, scope=self.scope))

    def __exit__(self, *exc_info: object) -> None:
        emit(WaitEnded(kind=self.kind, scope=self.scope, seconds=time.perf_counter() - self.start))


class _NoWait:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_WAIT = _NoWait()


def waiting(kind: str, scope: str = "") -> _Waiting | _NoWait:
    """``with hooks.waiting("retry"):`` around a wait: WaitStarted, then WaitEnded with its
    seconds (a shared do-nothing context manager when nobody listens)."""
    return _Waiting(kind, scope) if active else _NO_WAIT


_KINDS: tuple[type[Event], ...] = (
    CallStarted, CallEnded, AttemptStarted, AttemptEnded, WaitStarted, WaitEnded, CooldownStarted,
    TurnStarted, TurnEnded, ToolCallStarted, ToolCallEnded)


def attempt_started(number: int, provider: str, model: str,
                    messages: Sequence[Mapping[str, Any]]) -> None:
    """Emit :class:`AttemptStarted` (the agent's one line)."""
    emit(AttemptStarted(number=number, provider=provider, model=model, messages=messages))


def attempt_ended(attempt: Attempt, provider: str, completion: Any,
                  error: BaseException | None) -> None:
    """Emit :class:`AttemptEnded` from a provider's Completion (None when the request failed)."""
    emit(AttemptEnded(attempt=attempt, provider=provider, error=error,
                      usage=getattr(completion, "usage", None),
                      response_model=getattr(completion, "model", None),
                      finish_reason=getattr(completion, "finish_reason", None),
                      text=getattr(completion, "text", None)))
