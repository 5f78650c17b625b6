"""Where greenagents keeps what it remembers: in the current client's :class:`State`, not in globals.

A :class:`~greenagents.Client` owns one ``State``: its settings, and one *part* per stateful
module — HTTP pools (``http``), rate limits and cooldowns (``limits``), the execution log's
writers (``tracking``), cache stores and calls in flight (``cache``), the client's budget
(``budgets``), breaker streaks (``breakers``). Each of those modules defines its part as a small
class and finds its instance with ``state.current().part(ThatClass)``; this module knows none of
them, so it sits below all of them.

Which state is current: the one a client activated in this context (``with client:``, or a
client's own ``batch``/``call``...), else the process's default one, which the module functions
(``ga.batch``, ``ga.configure``...) use. Every call of a run executes in a copy of its caller's
``contextvars`` (see :mod:`greenagents.runtime`), so the calls of ``client.batch(...)`` see that
client, whichever greenlet or thread runs them.

>>> first, second = State(), State()
>>> first.part(dict) is first.part(dict), first.part(dict) is second.part(dict)
(True, False)
>>> with using(first):
...     current() is first
True
>>> current() is default()
True
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["State", "current", "default", "enter", "leave", "live", "using"]

P = TypeVar("P")


class State:
    """What one client owns: its settings and one instance of each stateful module's part.

    A part is made on first use by calling its class with no arguments; :meth:`close` calls each
    part's ``close()`` (flush, close connections). A part stays usable after ``close()`` (pools
    and writers reopen on next use), and what it was told (rate limits...) is kept.
    """

    __slots__ = ("__weakref__", "_lock", "_parts", "settings")

    def __init__(self, settings: Settings | None = None) -> None:
        #: None until first read: then the defaults and ``GREENAGENTS_*`` (see greenagents.config)
        self.settings = settings
        self._parts: dict[type[Any], Any] = {}
        # Parts are built without I/O under this lock, so a real OS lock (made before patching)
        # never holds the hub.
        self._lock = threading.Lock()
        _live.add(self)

    def part(self, kind: type[P]) -> P:
        """This state's instance of ``kind``, made on first use (once, even from many greenlets)."""
        found: P | None = self._parts.get(kind)
        if found is None:
            with self._lock:
                found = self._parts.get(kind)
                if found is None:
                    found = self._parts[kind] = kind()
        return found

    def parts(self) -> list[Any]:
        """The parts made so far."""
        return list(self._parts.values())

    def close(self) -> None:
        """Close every part that has a ``close()`` (what ``Client.close`` does)."""
        for part in self.parts():
            close = getattr(part, "close", None)
            if close is not None:
                close()

    def reset(self) -> None:
        """Close the parts, then forget them and the settings: as new (``Client.reset``)."""
        self.close()
        with self._lock:
            self._parts.clear()
            self.settings = None


_live: weakref.WeakSet[State] = weakref.WeakSet()
_default: State | None = None
_default_lock = threading.Lock()
_current: contextvars.ContextVar[State | None] = contextvars.ContextVar("greenagents_client",
                                                                       default=None)
_entered: contextvars.ContextVar[tuple[contextvars.Token[State | None], ...]] = \
    contextvars.ContextVar("greenagents_clients_entered", default=())


def default() -> State:
    """The process's default state: what the module functions act on outside any client."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = State()
    return _default


def current() -> State:
    """The state of the client active in this context, else the default one."""
    return _current.get() or _default or default()  # on every call: the cheap way first


def live() -> list[State]:
    """Every state still referenced (the default one included): what exit-time flushing visits."""
    return list(_live)


@contextmanager
def using(state: State) -> Iterator[State]:
    """Make ``state`` current for the block (in this context only)."""
    token = _current.set(state)
    try:
        yield state
    finally:
        _current.reset(token)


def enter(state: State) -> None:
    """Make ``state`` current until the matching :func:`leave` in this context (``with client:``,
    whose enter and exit are two calls, not one block)."""
    _entered.set((*_entered.get(), _current.set(state)))


def leave() -> None:
    """Undo the last :func:`enter` of this context."""
    *rest, token = _entered.get()
    _entered.set(tuple(rest))
    _current.reset(token)
