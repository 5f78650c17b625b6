"""Two fixes to Celery and kombu under gevent, applied by :func:`~greenagents.celery.install`.

They are patches of other libraries, so they happen when greenagents is installed on an app (in
the dispatcher and in each worker alike), not as a side effect of importing a module; applying
them twice is harmless.
"""

from __future__ import annotations

import select
from typing import Any

from celery.result import AsyncResult
from kombu.utils import eventio

__all__ = ["apply"]


def apply() -> None:
    """Wait on broker sockets with ``poll`` (no 1023 limit) and quiet results freed at exit."""
    eventio._get_poller = _choose_poller
    AsyncResult.__del__ = _forget_quietly


class _GeventPoll(eventio._poll):
    """kombu's ``poll`` poller on gevent's cooperative ``select.poll``.

    Under gevent kombu waits on its broker sockets with ``select()``, which refuses any file
    descriptor past 1023 ("filedescriptor out of range in select()"): a dispatcher or worker
    holding a thousand provider connections could no longer talk to Redis. ``poll`` has no such
    limit, and gevent's version waits without blocking the hub.
    """

    def __init__(self) -> None:
        self._poller = select.poll()
        self._quick_poll = self._poller.poll
        self._quick_register = self._poller.register
        self._quick_unregister = self._poller.unregister


def _choose_poller(choose: Any = eventio._get_poller) -> type:
    poller: type = choose()
    return _GeventPoll if poller is eventio._select and hasattr(select, "poll") else poller


_forget = AsyncResult.__del__


def _forget_quietly(result: AsyncResult) -> None:
    """``AsyncResult.__del__``, minus its noise at interpreter exit under gevent.

    A result still referenced when the program ends is finalized after gevent's greenlets are:
    its unsubscribe from Redis then fails with "greenlet is being finalized", printed once per
    result (dozens of tracebacks after a successful run). Nothing is left to unsubscribe from at
    that point (the connection goes with the process), so that one error is dropped.
    """
    try:
        _forget(result)
    except RuntimeError as exc:
        if "greenlet is being finalized" not in str(exc):
            raise
