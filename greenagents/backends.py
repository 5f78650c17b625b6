"""Where a run's calls execute: greenlets in a patched process, real threads otherwise.

A :class:`~greenagents.run.Run` asks its backend for the few primitives it needs — a semaphore, a
queue, a way to start a task, to wait with a timeout, to stop what it started — and never asks
which backend it has. :func:`backend_for` picks one: greenlets when the standard library is
monkey-patched (thousands of calls at once), else threads, with one warning, so that an unpatched
program stays correct and concurrent instead of silently running calls one by one.

>>> backend = GreenBackend()
>>> box = backend.queue()
>>> _ = backend.start(box.put, 42)
>>> backend.get(box, timeout=1)
42
>>> backend.get(box, timeout=0.01) is EMPTY
True

Pitfalls handled here:

* ``gevent.Timeout`` is a ``BaseException``: :meth:`GreenBackend.within` tells its own timer
  from one the call set itself by identity, so a call's own timeout stays that call's error.
* A real thread cannot be interrupted: :meth:`ThreadBackend.within` runs the call in a helper
  thread and stops waiting for it; the abandoned thread finishes in the background, its answer
  dropped.
* The main thread waiting on a queue does so in short slices, so Ctrl-C stays responsive.
"""

from __future__ import annotations

import contextvars
import threading
import warnings
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any, Protocol, TypeVar

import gevent
import gevent.lock
import gevent.pool
import gevent.queue

from .patching import available, how_to_patch

__all__ = ["EMPTY", "Backend", "Expired", "GreenBackend", "NotPatchedWarning", "Task",
           "ThreadBackend", "backend_for"]

T = TypeVar("T")

EMPTY = object()  # what get() returns when nothing came within its timeout


class Expired(Exception):
    """A call outlived the timeout :meth:`Backend.within` gave it."""


class NotPatchedWarning(RuntimeWarning):
    """The process is not monkey-patched, so runs fall back to real threads."""


class Backend(Protocol):
    """What a run needs from the place its calls execute."""

    green: bool  # greenlets (True) or threads

    def semaphore(self, value: int) -> Any: ...

    def queue(self) -> Any: ...

    def start(self, fn: Callable[..., object], *args: Any, apart: bool = False,
              context: contextvars.Context | None = None) -> Any:
        """Run ``fn(*args)`` concurrently (in ``context``, if given); a handle for :meth:`stop`.
        A task started ``apart`` (a run's feeder) is not stopped by :meth:`stop_all`."""

    def stop(self, handle: Any) -> None:
        """Stop one task :meth:`start` began, without waiting (a thread cannot be stopped)."""

    def stop_all(self) -> None:
        """Stop every task :meth:`start` began, waiting up to a second for them to end."""

    def get(self, box: Any, timeout: float | None) -> Any:
        """The next item of ``box``, or :data:`EMPTY` once ``timeout`` seconds passed."""

    def get_nowait(self, box: Any) -> Any:
        """The next item of ``box``, or :data:`EMPTY` at once."""

    def within(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()``, or :class:`Expired` when it takes longer than ``timeout`` seconds."""


class Task(gevent.Greenlet):  # type: ignore[type-arg]  # not subscriptable at run time
    """A run's greenlet, and a tool call's. It keeps one frame of where it was spawned, not
    gevent's default ten: each is an object the cyclic GC tracks for the call's whole life (seven
    per call at the depth a batch spawns from: 70,000 at 10,000 in flight), and the spawning frame
    is what a ``gevent.util.format_run_info`` reader needs."""

    spawning_stack_limit = 1


class GreenBackend:
    """Greenlets of one ``gevent.pool.Group``: a kill stops them where they wait."""

    green = True

    def __init__(self) -> None:
        self.group = gevent.pool.Group()
        self.group.greenlet_class = Task

    def semaphore(self, value: int) -> gevent.lock.Semaphore:
        return gevent.lock.Semaphore(value)

    def queue(self) -> gevent.queue.UnboundQueue[Any]:
        return gevent.queue.UnboundQueue()

    def start(self, fn: Callable[..., object], *args: Any, apart: bool = False,
              context: contextvars.Context | None = None) -> gevent.Greenlet[Any, Any]:
        task = Task.spawn(fn, *args) if apart else self.group.spawn(fn, *args)
        if context is not None:
            # the greenlet's own context (it has not run yet), not ``context.run`` as its
            # function: one C-level call less under every wait, so less C stack saved per call
            task.gr_context = context
        return task

    def stop(self, handle: gevent.Greenlet[Any, Any]) -> None:
        handle.kill(block=False)

    def stop_all(self) -> None:
        self.group.kill(block=True, timeout=1)

    def get(self, box: gevent.queue.UnboundQueue[Any], timeout: float | None) -> Any:
        try:
            return box.get(timeout=timeout)
        except gevent.queue.Empty:
            return EMPTY

    def get_nowait(self, box: gevent.queue.UnboundQueue[Any]) -> Any:
        try:
            return box.get(block=False)
        except gevent.queue.Empty:
            return EMPTY

    def within(self, fn: Callable[[], T], timeout: float) -> T:
        timer = gevent.Timeout(timeout)
        try:
            with timer:
                return fn()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise  # the call's own timeout: its error, not ours
            raise Expired from None


class ThreadBackend:
    """Real daemon threads, for a process that is not monkey-patched."""

    green = False
    _SLICE_S = 0.25  # the longest the main thread waits at once: Ctrl-C stays responsive

    def semaphore(self, value: int) -> threading.Semaphore:
        return threading.Semaphore(value)

    def queue(self) -> SimpleQueue[Any]:
        return SimpleQueue()

    def start(self, fn: Callable[..., object], *args: Any, apart: bool = False,
              context: contextvars.Context | None = None) -> threading.Thread:
        if context is not None:
            fn, args = context.run, (fn, *args)
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        return thread

    def stop(self, handle: threading.Thread) -> None:
        pass  # a thread cannot be stopped; the run's cancel flag ends it at its next check

    def stop_all(self) -> None:
        pass

    def get(self, box: SimpleQueue[Any], timeout: float | None) -> Any:
        wait = self._SLICE_S if timeout is None else min(timeout, self._SLICE_S)
        try:
            return box.get(timeout=wait)
        except Empty:
            return EMPTY

    def get_nowait(self, box: SimpleQueue[Any]) -> Any:
        try:
            return box.get(block=False)
        except Empty:
            return EMPTY

    def within(self, fn: Callable[[], T], timeout: float) -> T:
        box: dict[str, Any] = {}
        finished = threading.Event()

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True).start()
        if not finished.wait(timeout):
            raise Expired
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]


_warned_unpatched = False


def backend_for(limit: int, *, stacklevel: int = 2) -> Backend:
    """Greenlets when the process is patched; else threads, after one :class:`NotPatchedWarning`
    (``limit`` is how many threads a run may use, for the message)."""
    global _warned_unpatched
    if available():
        return GreenBackend()
    if not _warned_unpatched:
        _warned_unpatched = True
        warnings.warn(
            f"greenagents: the standard library is not monkey-patched, so calls run in up to "
            f"{limit} real threads instead of greenlets. For thousands of concurrent calls, "
            f"{how_to_patch()}.",
            NotPatchedWarning,
            stacklevel=stacklevel + 1,
        )
    return ThreadBackend()
