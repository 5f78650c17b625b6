"""Reading a run's calls from the caller's iterable, lazily, a bounded window ahead.

A run (local, or on Celery) must not read a million-call generator into memory, nor let an
iterable that is slow to give its next call (a pipe, a queue, a paced generator) hold back the
Results already finished. So the iterable is read by a :class:`Feeder`, a task of its own on the
run's backend, with the caller's contextvars: it puts each ``(index, call)`` it takes into the
run's event queue as a :class:`Fed`, at most ``window`` ahead of what the run has
:meth:`~Feeder.taken`, then :data:`FED_ALL`; an exception the iterable raises arrives as
:class:`FeedFailed`, for the run to raise to its caller as a plain loop over the iterable would.

>>> from greenagents.backends import GreenBackend
>>> backend = GreenBackend()
>>> events = backend.queue()
>>> feeder = Feeder(enumerate(["a", "b"]), backend, events, window=10)
>>> [backend.get(events, 1) for _ in range(3)][:2]
[Fed(index=0, call='a'), Fed(index=1, call='b')]

:func:`unpack_call` is the one reading of a call's shape, ``(fn, kwargs)`` or
``(fn, args, kwargs)``, for every run.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import gevent

from . import errors
from .backends import Backend

__all__ = ["FED_ALL", "Fed", "FeedFailed", "Feeder", "check_shapes", "unpack_call"]

Unpacked = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def unpack_call(index: int, call: Any) -> Unpacked:
    """``(fn, args, kwargs)`` of a call; an InputError naming the shapes for anything else.

    >>> unpack_call(0, (divmod, (7, 2), {}))
    (<built-in function divmod>, (7, 2), {})
    """
    if isinstance(call, tuple) and callable(call[0] if call else None):
        if len(call) == 2 and isinstance(call[1], dict):
            return call[0], (), call[1]
        if len(call) == 3 and isinstance(call[1], (tuple, list)) and isinstance(call[2], dict):
            return call[0], tuple(call[1]), call[2]
    raise errors.InputError(
        f"call #{index} is {call!r:.80}; each call must be (fn, kwargs) or (fn, args, kwargs), "
        "e.g. (MyAgent, {'text': 'hi'})")


def check_shapes(calls: Iterable[Any]) -> None:
    """A list of calls is checked whole before any runs: a shape that can never work is the
    caller's mistake, not N failed Results. (A lazy iterable keeps per-item errors.)"""
    if isinstance(calls, (list, tuple)):
        for index, call in enumerate(calls):
            unpack_call(index, call)


@dataclass(frozen=True, slots=True)
class Fed:
    """A call the feeder took from the iterable, with its input index."""

    index: int
    call: Any


class FeedFailed(NamedTuple):
    """The iterable raised: the run stops with its error, as a plain loop over it would."""

    error: BaseException


FED_ALL = object()  # the iterable is exhausted


class Feeder:
    """Moves ``(index, call)`` pairs from ``source`` into ``events``, at most ``window`` ahead.

    Started at once, on ``backend``, in a copy of the caller's context (for the iterable's own
    code). The consumer calls :meth:`taken` for each :class:`Fed` it is done with (its call
    finished, or it was refused), which lets the feeder read one more; :meth:`stop` ends it.
    """

    def __init__(self, source: Iterator[tuple[int, Any]], backend: Backend, events: Any,
                 window: int):
        self.source, self.backend, self.events = source, backend, events
        self.window = backend.semaphore(window)
        self.stopped = False
        self.task = backend.start(contextvars.copy_context().run, self._feed, apart=True)

    def _feed(self) -> None:
        try:
            while True:
                self.window.acquire()
                if self.stopped:
                    return
                try:
                    index, call = next(self.source)
                except StopIteration:
                    self.events.put(FED_ALL)
                    return
                self.events.put(Fed(index, call))
        except gevent.GreenletExit:
            return  # the run was cancelled while the iterable was waiting
        except BaseException as exc:  # the iterable's own failure: raised to the caller
            self.events.put(FeedFailed(exc))

    def taken(self) -> None:
        """One call fed earlier is done with: a place in the window for the next."""
        self.window.release()

    def stop(self) -> None:
        """Take no more calls: a feeder waiting for a place in the window wakes and ends; one inside the
        iterable is killed there (greenlets) or ends once it returns (threads)."""
        self.stopped = True
        self.window.release()
        self.backend.stop(self.task)

    def halt(self) -> None:
        """Take no more calls, and wait until the feeder ended: after the call it is reading, if
        any, so that nothing is in flight between the iterable and the events."""
        self.stopped = True
        self.window.release()
        self.task.join()
