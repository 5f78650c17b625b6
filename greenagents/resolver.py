"""DNS in a patched process: an IP literal is answered in place, not through gevent's thread pool.

gevent's default resolver (``thread``) sends *every* ``getaddrinfo`` to the hub's pool of native
threads (10 by default), ``getaddrinfo("127.0.0.1", 8000)`` included, although the C library
answers an IP literal by parsing it: nothing can block. Every new connection that ``requests``,
``urllib3`` or ``http.client`` opens asks first, so a tool-using batch opening 3,000 connections
to a local service at once queues 3,000 trips through 10 threads. Measured (gevent 26.9, this
project's shared 2-core machine, ``socket.getaddrinfo`` in a loop, CPU of every thread): 26–50 µs
per lookup through the pool, 4–7 µs in place.

:class:`Resolver` is gevent's thread resolver, except that a numeric host (and a numeric or empty
port) is resolved by the C library with ``AI_NUMERICHOST | AI_NUMERICSERV``, which never does a
lookup; anything else — a name, a service name like ``"http"``, and any error — goes to the pool
exactly as before, so the answers are the C library's either way. gevent has no setting that does
this: ``ares`` and ``dnspython`` answer literals in place but resolve names their own way
(``/etc/nsswitch.conf`` ignored), and ``block`` blocks the hub on real names.

:func:`greenagents.patch` installs it (:func:`install`) unless the program chose another resolver
(``GEVENT_RESOLVER`` or ``gevent.config.resolver``), which it leaves alone.

>>> import socket
>>> socket.getaddrinfo("127.0.0.1", 8000, socket.AF_INET, socket.SOCK_STREAM)[0][4]  # no thread
('127.0.0.1', 8000)
>>> install()  # done by greenagents.patch(); again, it says whether it is the resolver in use
True
"""

from __future__ import annotations

import _socket
from typing import Any

import gevent
from gevent.resolver.thread import Resolver as ThreadResolver

__all__ = ["Resolver", "install"]

_NUMERIC_ONLY = _socket.AI_NUMERICHOST | _socket.AI_NUMERICSERV


class Resolver(ThreadResolver):
    """gevent's thread resolver with IP literals answered in place (see the module docstring)."""

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, socktype: int = 0,
                    proto: int = 0, flags: int = 0) -> Any:
        try:
            return _socket.getaddrinfo(host, port, family, socktype, proto, flags | _NUMERIC_ONLY)
        except (_socket.gaierror, UnicodeError):  # a name, a service name, or a real error
            return super().getaddrinfo(host, port, family, socktype, proto, flags)


def install() -> bool:
    """Make :class:`Resolver` the resolver of every gevent hub created from now on, when gevent's
    default ``thread`` resolver is the one configured. Returns whether it did.

    A hub that already built its resolver keeps it; :func:`greenagents.patch` runs this before any
    patched code can have asked the hub for one.
    """
    if gevent.config.resolver is not ThreadResolver:  # chosen by the program: keep its choice
        return gevent.config.resolver is Resolver
    gevent.config.resolver = Resolver
    return True
