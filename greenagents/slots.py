"""The concurrency slot a running call holds, reachable from inside the call.

``ga.batch(..., max_concurrent=20)`` lets 20 calls run at once; each holds one slot. A call that
has to wait without doing anything — a retry backoff, a rate-limit cooldown — should not keep its
slot, or twenty calls backing off stall the whole batch. :func:`sleep` gives the slot back for
the wait and takes it again before the call goes on. The runtime installs the slot in a context
variable; code deeper down (retries, limits) only calls :func:`sleep` or :func:`released`, so the
layers never import each other.

>>> from greenagents import slots
>>> slots.sleep(0.01)   # outside a batch: just a (cooperative) sleep
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import gevent

from .patching import in_green_context

__all__ = ["Slot", "current", "released", "sleep"]


class _Semaphore(Protocol):
    def acquire(self) -> object: ...
    def release(self) -> object: ...


class Slot:
    """One place in a run's bound; knows whether it is held so it is never released twice."""

    __slots__ = ("_held", "_semaphore")

    def __init__(self, semaphore: _Semaphore):
        self._semaphore = semaphore
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> None:
        self._semaphore.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


current: ContextVar[Slot | None] = ContextVar("greenagents_slot", default=None)


@contextmanager
def released() -> Iterator[None]:
    """Give the current call's slot to another call for the duration of the block.

    Outside a batch (no slot) it does nothing. The slot is taken back on the way out, even when
    the block raises; a kill while waiting for it leaves the slot unheld, never double-released.
    """
    slot = current.get()
    if slot is None or not slot.held:
        yield
        return
    slot.release()
    try:
        yield
    finally:
        slot.acquire()


def sleep(seconds: float) -> None:
    """Sleep without holding a slot and without blocking other greenlets.

    Inside a greenlet this is ``gevent.sleep``; in a plain thread (the unpatched fallback) it is
    ``time.sleep``, which then blocks only that thread.
    """
    with released():
        if in_green_context():
            gevent.sleep(seconds)
        else:
            time.sleep(seconds)
