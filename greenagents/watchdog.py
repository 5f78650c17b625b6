"""The whole-attempt time limit for the thread fallback: cut a connection whose headers drip.

In a patched process a ``gevent.Timeout`` bounds an attempt, whole. A real thread cannot be
interrupted, and socket timeouts bound each ``recv``, not their sum: a server that sends its
status line and headers a byte at a time, each just inside the timeout, would hold the thread
forever. So, in an unpatched process only, :func:`watched` connection classes arm a timer while
waiting for the headers; when the attempt's deadline passes it shuts the socket down, the blocked
``recv`` returns, and :func:`greenagents.http.post_json` reports a ``Timeout``. The body is
bounded there too, by a deadline check between reads.

>>> import urllib3
>>> watched(urllib3.connection.HTTPConnection).__name__
'WatchedHTTPConnection'
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

__all__ = ["deadline", "watched"]

# The current attempt's deadline (time.monotonic()), set only on the unpatched path.
_deadline: ContextVar[float | None] = ContextVar("greenagents_attempt_deadline", default=None)


@contextmanager
def deadline(until: float) -> Any:
    """Within this block, requests over :func:`watched` connections end by ``until``."""
    token = _deadline.set(until)
    try:
        yield
    finally:
        _deadline.reset(token)


def _cut(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed: the attempt ended on its own
        sock.shutdown(socket.SHUT_RDWR)  # the blocked recv returns; the connection is dropped


@functools.cache
def watched(base: type[Any]) -> type[Any]:
    """``base`` (a urllib3 connection class) whose wait for the headers ends at the deadline."""

    def getresponse(self: Any) -> Any:
        until = _deadline.get()
        sock = getattr(self, "sock", None)
        if until is None or sock is None:
            return base.getresponse(self)
        timer = threading.Timer(max(0.0, until - time.monotonic()), _cut, (sock,))
        timer.daemon = True
        timer.start()
        try:
            return base.getresponse(self)
        finally:
            timer.cancel()

    return type(f"Watched{base.__name__}", (base,), {"getresponse": getresponse,
                                                     "__module__": __name__})
