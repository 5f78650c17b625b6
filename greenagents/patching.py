"""Monkey-patching the standard library with gevent, and telling the truth about it.

Only patched code is concurrent: after :func:`patch`, a blocking socket read parks just its own
greenlet, so ``requests``, ``urllib3`` and the official SDKs overlap their waits with no rewrite.
This module imports nothing but gevent, so it is safe to import before anything else.

Pitfalls it guards against (each measured with gevent 26.9, requests 2.34, urllib3 2.8):

* **Patching too late.** A module that bound the stdlib ``SSLContext`` before patching (urllib3,
  hence requests, does ``from ssl import SSLContext``) makes every HTTPS call fail with
  ``RecursionError`` in ``SSLContext.minimum_version``; an ``openai.OpenAI()`` client built before
  patching holds a stdlib ``SSLContext`` and fails with ``TypeError: super(type, obj)``; urllib3
  captured the stdlib ``LifoQueue`` for its pools (a known deadlock). :func:`patch` looks in
  ``sys.modules`` and warns once, naming the modules and the line to move. ``import ssl`` alone
  is harmless (HTTPS works after a later patch; gunicorn imports it before reading
  ``gunicorn.conf.py``, where the patch belongs), so it alone is not warned about.
* **trio reads ``select.epoll`` at import, which gevent removes.** httpcore2 (under the openai
  and anthropic SDKs) imports trio when it is installed, so after a plain ``patch_all()`` building
  an ``openai.OpenAI()`` fails with ``AttributeError: select.epoll``. :func:`patch` imports trio
  right after patching with the original ``epoll`` lent back for the import (~0.1 s, only when
  trio is installed); trio's own loop is never run by sync code, so nothing blocks the hub.
* **Zero-timeout polls cost a trip through the hub.** Connection pools probe each idle connection
  with ``select.poll().poll(0)`` ("did the server close it?"): httpcore2 (under the openai and
  anthropic SDKs) does it for *every* idle connection each time a request starts or ends, urllib3
  once per reused connection. gevent's ``poll`` answers by starting a watcher per fd and switching
  to the hub (20 µs against 1.4 µs), so 300 SDK calls at once over one client spent ~2 s of CPU
  there. :func:`patch` installs a ``poll`` that answers a zero timeout with the OS's own poll (it
  cannot block) and any other timeout cooperatively, as gevent does.
* **A cold ``platform.platform()`` in many greenlets forks once per greenlet.** The SDKs put it
  in every request's headers (cached after the first call). It runs ``uname -p`` in a subprocess
  behind a ``functools.cached_property`` whose lock is a real ``RLock`` (Python <= 3.11; none at
  all since 3.12), which greenlets of one thread all re-enter: 300 first calls at once forked 300
  times (~4 s of a cold batch). :func:`patch` computes it once, before patching (~5 ms).
* **An IP literal's DNS lookup goes through a thread pool.** gevent's default resolver sends every
  ``getaddrinfo`` to the hub's 10 native threads, ``127.0.0.1`` included: 26–50 µs of CPU per new
  connection against 4–7 µs, and thousands of connections opening at once queue there.
  :func:`patch` installs :class:`greenagents.resolver.Resolver`, which answers IP literals in
  place and sends names to the pool as before (unless the program chose another resolver).
* **gRPC** (Vertex AI and other Google SDKs) runs its own threads and poller: it needs
  ``grpc.experimental.gevent.init_gevent()`` after patching and before any channel. :func:`patch`
  warns when grpc was already imported (too late for that); imported later, it is on the user.
* **``multiprocessing.Pool`` hangs once patched** (its result-handler threads become greenlets
  blocked on an unpatched pipe), whatever the start method; :func:`patch` makes constructing one
  warn with :class:`PitfallWarning`, naming ``ProcessPoolExecutor``, which works.
* **Not patching threads.** ``patch_all(thread=False)`` breaks ``threading.local``, real locks
  hang the hub and sessions shared with real threads raise ``Cannot switch to a different
  thread``; :func:`patch` always patches threads.

>>> import greenagents as ga
>>> ga.patch()   # doctest: +SKIP
>>> ga.available()   # doctest: +SKIP
True
"""

from __future__ import annotations

import importlib.util
import platform
import select
import sys
import threading
import warnings
from typing import Any

import gevent
import gevent.monkey
import gevent.select
from gevent.hub import Hub

from . import resolver

__all__ = ["LatePatchWarning", "PitfallWarning", "available", "how_to_patch", "in_green_context",
           "is_patched", "patch"]

# Modules that capture stdlib objects at import time and break (or deadlock) if imported before
# patching, with what goes wrong.
_FRAGILE = {
    "urllib3": "it holds the stdlib SSLContext and LifoQueue (HTTPS RecursionError, pool deadlocks)",
    "requests": "its sessions keep stdlib SSL contexts",
    "httpx": "clients built now keep stdlib SSL contexts",
    "openai": "clients built now keep stdlib SSL contexts",
    "anthropic": "clients built now keep stdlib SSL contexts",
}


class LatePatchWarning(RuntimeWarning):
    """:func:`patch` ran after modules that must be imported after it."""


_lock = threading.Lock()
_warned_late = False
_imported_before_patch: dict[str, str] = {}  # what patch() found too late, for doctor()


def imported_before_patch() -> dict[str, str]:
    """The fragile packages :func:`patch` found already imported, each with what goes wrong."""
    return dict(_imported_before_patch)


_HOLDS_SSL_CONTEXT = "holds the stdlib SSLContext (HTTPS calls fail with RecursionError)"


def fragile_imported() -> dict[str, str]:
    """Packages imported already that break once patched, each with what goes wrong."""
    late = {name: _FRAGILE[name] for name in _FRAGILE if name in sys.modules}
    ssl = sys.modules.get("ssl")
    if ssl is not None:  # any other module that did `from ssl import SSLContext`, yours included
        for name, module in list(sys.modules.items()):
            if name != "ssl" and getattr(module, "SSLContext", None) is ssl.SSLContext:
                late.setdefault(name.partition(".")[0], _HOLDS_SSL_CONTEXT)
    return late


def how_to_patch() -> str:
    """Where ``import greenagents.monkey`` goes for the program this process is running.

    Under pytest, "the first import of your program" is not something a user controls (pytest and
    its plugins import first), so the advice names pytest's own ways.

    >>> "pytest" in how_to_patch() or "first import" in how_to_patch()
    True
    """
    if "_pytest" in sys.modules or "pytest" in sys.modules:
        return ("under pytest, run it with `-p greenagents.monkey` (or `addopts = \"-p "
                "greenagents.monkey\"` in pytest.ini / [tool.pytest.ini_options]), or make "
                "`import greenagents.monkey` the first line of your top-level conftest.py")
    return ("make `import greenagents.monkey` the first import of your program (for gunicorn: "
            "the first line of gunicorn.conf.py; for Celery: the top of the module passed to -A)")


def patch() -> bool:
    """Monkey-patch the standard library for gevent (``patch_all``, threads included). Idempotent.

    Call it before anything imports ``ssl``, ``requests`` or an LLM SDK, or simply make
    ``import greenagents.monkey`` the first line of your program. Returns ``True`` when this call
    patched, ``False`` when the process already was. Warns with :class:`LatePatchWarning` (once)
    when it comes too late, saying which imports to move.
    """
    global _warned_late
    with _lock:
        if is_patched():
            return False
        late = fragile_imported()
        _imported_before_patch.update(late)
        platform.uname().processor  # noqa: B018  # cached now, while a fork cannot interleave
        gevent.monkey.patch_all()
        resolver.install()
        setattr(select, "poll", _Poll)  # noqa: B010
        _import_trio_with_epoll()
        _warn_on_multiprocessing_pool()
        if "grpc" in sys.modules:
            warnings.warn(
                "greenagents patched the standard library after grpc was imported: gRPC's own "
                "threads and polling will block the hub. Make `import greenagents.monkey` the first "
                "import, then call `grpc.experimental.gevent.init_gevent()` before creating any "
                "channel.", LatePatchWarning, stacklevel=2)
        if late and not _warned_late:
            _warned_late = True
            problems = "; ".join(f"{name}: {why}" for name, why in late.items())
            warnings.warn(
                f"greenagents patched the standard library after {', '.join(late)} "
                f"{'was' if len(late) == 1 else 'were'} imported ({problems}). To patch in time, "
                f"{how_to_patch()}.",
                LatePatchWarning,
                stacklevel=2,
            )
        return True


#: The operating system's ``select.poll`` (gevent's would yield): for zero-timeout checks.
os_poll = gevent.monkey.get_original("select", "poll")


class _Poll(gevent.select.poll):
    """gevent's cooperative ``select.poll``, except that a zero timeout asks the OS directly.

    A zero timeout never blocks, so the hub has nothing to wait for; the OS's answer is the same
    one gevent would give, ten times cheaper (see the module docstring).
    """

    _ALL = select.POLLIN | select.POLLPRI | select.POLLOUT  # the stdlib's default event mask

    def __init__(self) -> None:
        super().__init__()
        self._masks: dict[int, int] = {}

    def register(self, fd: Any, eventmask: int = _ALL) -> None:
        super().register(fd, eventmask)
        self._masks[fd if isinstance(fd, int) else fd.fileno()] = eventmask

    def unregister(self, fd: Any) -> None:
        super().unregister(fd)
        del self._masks[fd if isinstance(fd, int) else fd.fileno()]

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        if timeout != 0:
            return super().poll(timeout)
        probe = os_poll()
        for fd, mask in self._masks.items():
            probe.register(fd, mask)
        return probe.poll(0)  # type: ignore[no-any-return]


class PitfallWarning(RuntimeWarning):
    """Something known not to work under gevent's patching is being used."""


def _warn_on_multiprocessing_pool() -> None:
    # multiprocessing.Pool hangs once patched (its result-handler threads become greenlets blocked
    # on an unpatched pipe), with every start method; Process and ProcessPoolExecutor work.
    import multiprocessing.pool

    pool_class = multiprocessing.pool.Pool
    original = pool_class.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        warnings.warn("multiprocessing.Pool hangs in a gevent-patched process; use "
                      "concurrent.futures.ProcessPoolExecutor (or multiprocessing.Process)",
                      PitfallWarning, stacklevel=2)
        original(self, *args, **kwargs)

    setattr(pool_class, "__init__", __init__)  # noqa: B010


def _import_trio_with_epoll() -> None:
    if "trio" in sys.modules or importlib.util.find_spec("trio") is None:
        return
    setattr(select, "epoll", gevent.monkey.get_original("select", "epoll"))  # noqa: B010
    try:
        importlib.import_module("trio")  # for its side effect: trio is now in sys.modules
    except Exception:  # a broken trio install is its own problem, not a reason to fail patching
        pass
    finally:
        delattr(select, "epoll")


#: What greenlets need to run calls concurrently: blocking I/O and sleeps that yield to the hub.
GREEN_IO_MODULES = ("socket", "select", "time")
#: What a whole patch adds on top, and the rest of greenagents assumes (see "Not patching threads").
PATCHED_MODULES = (*GREEN_IO_MODULES, "ssl", "threading")


def is_patched() -> bool:
    """True when the process is wholly patched (:data:`PATCHED_MODULES`), as :func:`patch` does.

    It implies :func:`available`; a partial ``patch_all(thread=False)`` is available, not patched.
    """
    return all(gevent.monkey.is_module_patched(name) for name in PATCHED_MODULES)


def available() -> bool:
    """True when calls can really run concurrently as greenlets in this process.

    That needs :data:`GREEN_IO_MODULES` patched. When it is False, :func:`greenagents.batch`
    falls back to real threads (and says so).
    """
    global _available
    if not _available:  # once patched, a process stays patched (gevent cannot unpatch)
        _available = all(gevent.monkey.is_module_patched(name) for name in GREEN_IO_MODULES)
    return _available


_available = False  # asked on every request: remembered once True


def in_green_context() -> bool:
    """True inside a greenlet spawned by gevent (a batch worker, a gevent server's handler), False
    in a thread's main greenlet or in the hub itself."""
    current = gevent.getcurrent()
    return current.parent is not None and not isinstance(current, Hub)
