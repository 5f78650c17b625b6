"""Run many synchronous calls at once: ``batch``, ``each``, ``stream`` and ``spawn``.

Each call runs in its own greenlet, at most ``max_concurrent`` at a time; every input yields exactly
one :class:`~greenagents.Result`, whatever happens to the others. In a process that is not
monkey-patched the same functions run the calls in real threads instead (with one warning), so
they stay correct and concurrent — never silently one by one.

>>> import greenagents as ga
>>> [r.value for r in ga.each([1, 2, 3], lambda n: n * n)]
[1, 4, 9]

Pitfalls handled here (see gevent's docs for the why):

* Greenlets start with an *empty* ``contextvars`` context; each call runs in a copy of the
  caller's context, so tracing and tenant ids set by the caller reach the call.
* The hub prints a traceback for every greenlet that dies with an error, even a handled one;
  workers catch everything, so a batch with 1,000 failures prints nothing.
* ``gevent.Timeout`` and ``GreenletExit`` are ``BaseException``: the per-call timeout is caught by
  identity, and a kill is never mistaken for a call's error.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import gevent
import gevent.lock
import gevent.pool
import gevent.queue

from . import errors, hooks, runs, slots
from .asyncbridge import explain_running_loop
from .config import settings
from .patching import available, how_to_patch
from .progress import Progress
from .result import Result
from .summaries import CallsFailedWarning, ErrorTally, warn_failures

__all__ = ["CallsFailedWarning", "NotPatchedWarning", "batch", "call_target", "each", "spawn",
           "stream", "target_name"]

T = TypeVar("T")
Call = tuple[Callable[..., Any], dict[str, Any]] | tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

# Calls started ahead of the bound, parked on it: they take a slot the moment one frees up (a
# finished call, or one sleeping through a retry backoff). Memory stays O(max_concurrent).
_WINDOW = 2


class NotPatchedWarning(RuntimeWarning):
    """The process is not monkey-patched, so runs fall back to real threads."""


_warned_unpatched = False


def _warn_unpatched(limit: int) -> None:
    global _warned_unpatched
    if not _warned_unpatched:
        _warned_unpatched = True
        warnings.warn(
            f"greenagents: the standard library is not monkey-patched, so calls run in up to "
            f"{limit} real threads instead of greenlets. For thousands of concurrent calls, "
            f"{how_to_patch()}.",
            NotPatchedWarning,
            stacklevel=5,
        )


def target_name(fn: Callable[..., Any]) -> str:
    """The qualified name a Result uses for ``fn`` (``module.Class`` or ``module.function``)."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def call_target(call: Any) -> str:
    """The target name of a call not run (timed out before it started): "" when it has none.

    >>> call_target((divmod, (7, 2), {})), call_target("junk")
    ('divmod', '')
    """
    return target_name(call[0]) if isinstance(call, tuple) and call else ""


def _check_shapes(calls: Iterable[Any]) -> None:
    """A list of calls is checked whole before any runs: a shape that can never work is the
    caller's mistake, not N failed Results. (A lazy iterable keeps per-item errors.)"""
    if isinstance(calls, (list, tuple)):
        for index, call in enumerate(calls):
            _unpack(index, call)


def _unpack(index: int, call: Any) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    if isinstance(call, tuple) and callable(call[0] if call else None):
        if len(call) == 2 and isinstance(call[1], dict):
            return call[0], (), call[1]
        if len(call) == 3 and isinstance(call[1], (tuple, list)) and isinstance(call[2], dict):
            return call[0], tuple(call[1]), call[2]
    raise errors.InputError(
        f"call #{index} is {call!r:.80}; each call must be (fn, kwargs) or (fn, args, kwargs), "
        "e.g. (MyAgent, {'text': 'hi'})")


class _Expired(Exception):
    """A call outlived its timeout in the thread fallback."""


def _run_with_timeout_in_thread(fn: Callable[[], Any], timeout: float) -> Any:
    # A real thread cannot be interrupted: run the call in a helper thread and stop waiting for it.
    # The abandoned thread finishes in the background; its answer is dropped.
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
        raise _Expired
    if "error" in box:
        raise box["error"]
    return box["value"]


def _invoke(index: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            timeout: float | None, green: bool) -> Result[Any]:
    """:func:`_outcome`, told to the hooks' listeners (a CallStarted, then a CallEnded)."""
    call = hooks.call_opened(target_name(fn), fn, index=index,
                             agent=hasattr(fn, "__greenagents_call__")) if hooks.active else None
    if call is None:
        return _outcome(index, fn, args, kwargs, timeout, green)
    try:
        result = _outcome(index, fn, args, kwargs, timeout, green)
    except BaseException as exc:  # a kill: the listeners still see the call end
        hooks.call_closed(call, Result(index, call.target, error=exc))
        raise
    hooks.call_closed(call, result)
    return result


def _outcome(index: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             timeout: float | None, green: bool) -> Result[Any]:
    """Run one call and describe it as a Result; only a kill (GreenletExit) escapes."""
    hook = getattr(fn, "__greenagents_call__", None)

    def call() -> Any:
        return hook(*args, **kwargs) if hook is not None else fn(*args, **kwargs)

    start = time.perf_counter()
    timer = gevent.Timeout(timeout) if green and timeout is not None else None
    try:
        if timer is not None:
            with timer:
                value = call()
        elif timeout is not None:
            value = _run_with_timeout_in_thread(call, timeout)
        else:
            value = call()
    except gevent.GreenletExit:
        raise
    except (gevent.Timeout, _Expired) as exc:
        if isinstance(exc, gevent.Timeout) and exc is not timer:
            return Result(index, target_name(fn), error=exc, duration_s=time.perf_counter() - start)
        error = errors.Timeout(f"{target_name(fn)} did not finish within timeout={timeout}s; "
                               "raise the timeout or make the call faster")
        return Result(index, target_name(fn), error=error, duration_s=time.perf_counter() - start)
    except BaseException as exc:  # a call's failure is its Result's, never the batch's
        return Result(index, target_name(fn),
                      error=errors.scrub(explain_running_loop(exc) if green else exc),
                      duration_s=time.perf_counter() - start)
    if hook is not None and isinstance(value, Result):
        value.index = index
        return value
    return Result(index, target_name(fn), value=value, duration_s=time.perf_counter() - start)


class _Run:
    """One batch or stream: its bound, its live workers, its finished results.

    The caller's greenlet (or thread) starts workers up to ``_WINDOW`` × the bound ahead and
    collects their Results; workers wait for a slot, run, free the slot, then report.
    """

    def __init__(self, limit: int, timeout: float | None, deadline: float | None,
                 max_errors: int | None = None, warn: bool = True, stacklevel: int = 1):
        self.green = available()
        if not self.green:
            _warn_unpatched(limit)
        self.limit = limit
        self.timeout = timeout
        self.deadline = deadline
        self.max_errors = max_errors
        self.warn, self.stacklevel = warn, stacklevel  # stacklevel: frames from results() to the user
        self.tally = ErrorTally()
        self.finished = 0
        self.run_id = runs.run_id.get() or runs.new_run_id()  # a batch inside a run joins it
        self.cancelled = False
        self.bound: Any
        self.done: Any
        if self.green:
            self.bound = gevent.lock.Semaphore(limit)
            self.done = gevent.queue.UnboundQueue()
            self.group = gevent.pool.Group()
        else:
            self.bound = threading.Semaphore(limit)
            self.done = queue.SimpleQueue()

    def _start(self, index: int, fn: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> None:
        context = contextvars.copy_context()
        context.run(runs.run_id.set, self.run_id)  # what the execution log records for the call
        context.run(runs.input_index.set, index)
        if self.green:
            self.group.spawn(context.run, self._work, index, fn, args, kwargs)
        else:
            threading.Thread(target=context.run, args=(self._work, index, fn, args, kwargs),
                             daemon=True).start()

    def _work(self, index: int, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
        slot = slots.Slot(self.bound)
        slots.current.set(slot)  # this worker's own context copy: nothing to reset
        with hooks.waiting("slot"):
            slot.acquire()
        try:
            if self.cancelled:
                return
            result = _invoke(index, fn, args, kwargs, self.timeout, self.green)
        finally:
            slot.release()
        self.done.put(result)

    def _next(self, ends_at: float | None) -> Any:
        """The next event (a finished Result, or the feeder's), or None when the deadline passed."""
        while True:
            wait = None if ends_at is None else ends_at - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            if not self.green:  # short waits keep Ctrl-C responsive in the main thread
                wait = 0.25 if wait is None else min(wait, 0.25)
            try:
                return self.done.get(timeout=wait)
            except (queue.Empty, gevent.queue.Empty):
                continue

    def _cancel(self) -> None:
        self.cancelled = True
        if self.green:
            self.group.kill(block=True, timeout=1)

    def _feed(self, source: Iterator[tuple[int, Any]], room: Any) -> None:
        """Move calls from the caller's iterable to ``done``, at most the window ahead.

        In a greenlet (or thread) of its own, so an iterable that is slow to give its next call
        (a pipe, a queue, a paced generator) never holds back the Results already finished.
        """
        try:
            while True:
                room.acquire()
                if self.cancelled:
                    return
                try:
                    item = next(source)
                except StopIteration:
                    self.done.put(_FED_ALL)
                    return
                self.done.put(_Fed(*item))
        except gevent.GreenletExit:
            return  # the run was cancelled while the iterable was waiting
        except BaseException as exc:  # the iterable's own failure: raised to the caller
            self.done.put(_FeedFailed(exc))

    def _start_feeder(self, source: Iterator[tuple[int, Any]], room: Any) -> Any:
        context = contextvars.copy_context()  # the caller's, for the iterable's own code
        if self.green:
            return gevent.spawn(context.run, self._feed, source, room)
        feeder = threading.Thread(target=context.run, args=(self._feed, source, room), daemon=True)
        feeder.start()
        return feeder

    def _emit(self, result: Result[Any], bar: Progress) -> Result[Any]:
        """Count a Result on its way to the caller: the bar, the failures, the total."""
        bar.add(result)
        self.finished += 1
        if result.error is not None:
            self.tally.add(result.error)
        return result

    def _ended(self, why: str = "") -> None:
        if self.warn:
            warn_failures(self.tally, self.finished, why=why, stacklevel=self.stacklevel + 2)

    def results(self, calls: Iterable[Any], bar: Progress) -> Iterator[Result[Any]]:
        pending: dict[int, str] = {}
        source = enumerate(calls)
        room = (gevent.lock.Semaphore if self.green else threading.Semaphore)(self.limit * _WINDOW)
        ends_at = None if self.deadline is None else time.monotonic() + self.deadline
        fed_all = False
        feeder = self._start_feeder(source, room)
        if self.green:
            _quiet_interrupts(gevent.get_hub())
        with bar:
            try:
                while not (fed_all and not pending):
                    event = self._next(ends_at)
                    if event is None:
                        yield from self._deadline_passed(pending, source, feeder, room, bar)
                        return
                    if event is _FED_ALL:
                        fed_all = True
                    elif isinstance(event, _FeedFailed):
                        raise event.error
                    elif isinstance(event, _Fed):
                        try:
                            fn, args, kwargs = _unpack(event.index, event.call)
                        except errors.InputError as exc:
                            room.release()
                            yield self._emit(Result(event.index, "", error=exc), bar)
                        else:
                            pending[event.index] = target_name(fn)
                            self._start(event.index, fn, args, kwargs)
                    else:
                        del pending[event.index]
                        room.release()
                        if isinstance(event.error, (KeyboardInterrupt, SystemExit)):
                            raise event.error
                        yield self._emit(event, bar)
                    if self.max_errors is not None and self.tally.failed > self.max_errors:
                        yield from self._abort(pending, source, feeder, room, bar)
                        return
                self._ended()
            finally:
                self._cancel()
                room.release()  # a feeder waiting for room wakes, sees the cancel, ends
                if self.green:
                    feeder.kill(block=False)

    def _deadline_passed(self, *state: Any) -> Iterator[Result[Any]]:
        late = f"the run's deadline of {self.deadline}s passed"
        hint = "; raise deadline= or max_concurrent="
        yield from self._stop_early(
            *state,
            running=functools.partial(errors.Timeout, f"{late} before this call finished{hint}"),
            unstarted=functools.partial(errors.Timeout, f"{late} before this call started{hint}"))
        self._ended(f" ({late})")

    def _abort(self, *state: Any) -> Iterator[Result[Any]]:
        """More than ``max_errors`` calls failed: what has not finished ends as Aborted."""
        aborted = functools.partial(errors.Aborted, (
            f"the run stopped after {self.tally.failed} failed calls (max_errors="
            f"{self.max_errors}) before this call ended; see the other calls' errors"))
        yield from self._stop_early(*state, running=aborted, unstarted=aborted)
        self._ended(f" and the run stopped there (max_errors={self.max_errors}); the calls "
                    "not finished are Aborted")

    def _stop_early(self, pending: dict[int, str], source: Iterator[tuple[int, Any]], feeder: Any,
                    room: Any, bar: Progress, *, running: Callable[[], BaseException],
                    unstarted: Callable[[], BaseException]) -> Iterator[Result[Any]]:
        """Stop every call, keep what finished; ``running`` is the error of the calls stopped,
        ``unstarted`` that of the calls not started (the deadline passed, or max_errors)."""
        self._cancel()
        room.release()
        feeder.join()  # it ends after the call it is reading, if any: that one is timed out too
        fed: list[_Fed] = []
        failure: BaseException | None = None
        while True:  # results that arrived while cancelling are real answers: keep them
            try:
                event = self.done.get(block=False)
            except (queue.Empty, gevent.queue.Empty):
                break
            if isinstance(event, _Fed):
                fed.append(event)
            elif isinstance(event, _FeedFailed):
                failure = event.error
            elif isinstance(event, Result):
                del pending[event.index]  # type: ignore[arg-type]
                yield self._emit(event, bar)
        for index, target in sorted(pending.items()):
            yield self._emit(Result(index, target, error=running()), bar)
        if failure is not None:
            raise failure
        for index, call in itertools.chain(((f.index, f.call) for f in fed), source):
            yield self._emit(Result(index, call_target(call), error=unstarted()), bar)


@dataclass(frozen=True, slots=True)
class _Fed:
    """A call the feeder took from the iterable, with its input index."""

    index: int
    call: Any


class _FeedFailed(NamedTuple):
    """The iterable raised: the run stops with its error, as a plain loop over it would."""

    error: BaseException


_FED_ALL = object()  # the iterable is exhausted


def _quiet_interrupts(hub: Any) -> None:
    """Ctrl-C reaches the caller (as :class:`~greenagents.errors.Interrupted` from a batch); the
    hub need not also print it with a timestamp first. Left in place for later runs: it is the
    same for every run of this hub, and restoring it would race between concurrent runs."""
    if KeyboardInterrupt not in hub.NOT_ERROR:
        hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)


def _checked_limit(max_concurrent: int | None) -> int:
    limit = settings().max_concurrency if max_concurrent is None else max_concurrent
    if not isinstance(limit, int) or limit < 1:
        raise errors.ConfigError(f"max_concurrent must be an int >= 1, got {limit!r}")
    return limit


def _checked_seconds(name: str, value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise errors.ConfigError(f"{name} must be a number of seconds > 0 (or None), got {value!r}")
    return value


def _checked_max_errors(max_errors: int | None) -> int | None:
    if max_errors is not None and (isinstance(max_errors, bool) or not isinstance(max_errors, int)
                                   or max_errors < 0):
        raise errors.ConfigError(f"max_errors must be an int >= 0 (failures tolerated before the "
                                 f"run stops) or None, got {max_errors!r}")
    return max_errors


@dataclass(frozen=True)
class _Options:
    """The knobs every run takes, checked once."""

    max_concurrent: int | None = None
    timeout: float | None = None
    deadline: float | None = None
    progress: bool | None = None
    max_errors: int | None = None
    warn_failures: bool = True


def _stream(calls: Iterable[Any], total: int | None, options: _Options,
            stacklevel: int) -> Iterator[Result[Any]]:
    run = _Run(_checked_limit(options.max_concurrent), _checked_seconds("timeout", options.timeout),
               _checked_seconds("deadline", options.deadline),
               _checked_max_errors(options.max_errors), options.warn_failures, stacklevel)
    progress = options.progress
    enabled = settings().progress if progress is None else progress
    return run.results(calls, Progress(total, enabled=enabled))


def _size(items: Iterable[Any]) -> int | None:
    return len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]


def _collect(source: Iterator[Result[Any]],
             on_result: Callable[[Result[Any]], object] | None) -> list[Result[Any]]:
    results: list[Result[Any]] = []
    try:
        for result in source:
            if on_result is not None:
                on_result(result)
            results.append(result)
    except KeyboardInterrupt as stop:
        if isinstance(stop, errors.Interrupted):
            raise
        results.sort(key=lambda r: r.index or 0)
        raise errors.Interrupted(results) from None  # the finished work is not lost
    finally:
        source.close()  # type: ignore[attr-defined]  # stops the calls still running
    results.sort(key=lambda r: r.index or 0)
    return results


def stream(calls: Iterable[Call], *, max_concurrent: int | None = None,
           timeout: float | None = None, deadline: float | None = None,
           progress: bool | None = None, max_errors: int | None = None,
           warn_failures: bool = True) -> Iterator[Result[Any]]:
    """Run ``calls`` concurrently and yield each :class:`Result` as it completes.

    ``calls`` is consumed lazily, so a generator of a million calls runs in memory proportional to
    ``max_concurrent``, not to its length. It is read by a greenlet (a thread, unpatched) of its
    own, with the caller's contextvars, so a slow iterable never holds back the Results already
    finished; an exception it raises ends the run with that exception. ``timeout`` bounds each
    call; ``deadline`` bounds the whole run (calls still running or not started then get a
    ``Timeout`` error). Once more than ``max_errors`` calls failed, no new call starts: the calls
    running and the rest end at once as :class:`~greenagents.errors.Aborted`. A run that ends
    with failures warns once (:class:`CallsFailedWarning`, by error type with the first message
    of each) unless ``warn_failures=False``. Leaving the loop early (``break``, an exception)
    stops the calls still running. A list with a call that is not ``(fn, kwargs)`` or
    ``(fn, args, kwargs)`` raises :class:`~greenagents.errors.InputError` before any call runs.

    >>> import greenagents as ga
    >>> sorted(r.value for r in ga.stream([(abs, (-1,), {}), (abs, (-2,), {})]))
    [1, 2]
    """
    _check_shapes(calls)
    options = _Options(max_concurrent, timeout, deadline, progress, max_errors, warn_failures)
    return _stream(calls, _size(calls), options, stacklevel=1)


def batch(calls: Iterable[Call], *, max_concurrent: int | None = None,
          timeout: float | None = None, deadline: float | None = None,
          progress: bool | None = None,
          on_result: Callable[[Result[Any]], object] | None = None,
          max_errors: int | None = None, warn_failures: bool = True) -> list[Result[Any]]:
    """Run ``calls`` concurrently; one :class:`Result` per call, in input order.

    Each call is ``(fn, kwargs)`` or ``(fn, args, kwargs)``; ``fn`` may be any callable, an Agent
    class included. ``on_result`` sees each Result as it completes; if it raises, the calls still
    running are stopped and the exception propagates. Ctrl-C stops them too and raises
    :class:`~greenagents.errors.Interrupted` (a ``KeyboardInterrupt``) whose ``results`` are
    the Results finished so far. ``max_errors`` and ``warn_failures`` are those of
    :func:`stream`.

    >>> import greenagents as ga
    >>> [r.value for r in ga.batch([(divmod, (7, 2), {}), (pow, {"base": 2, "exp": 8})])]
    [(3, 1), 256]
    """
    _check_shapes(calls)
    options = _Options(max_concurrent, timeout, deadline, progress, max_errors, warn_failures)
    return _collect(_stream(calls, _size(calls), options, stacklevel=3), on_result)


def each(items: Iterable[Any], fn: Callable[[Any], T], *, max_concurrent: int | None = None,
         timeout: float | None = None, deadline: float | None = None,
         progress: bool | None = None, max_errors: int | None = None,
         warn_failures: bool = True) -> list[Result[T]]:
    """``fn(item)`` for every item, concurrently; Results in the items' order.

    Options as in :func:`batch`.

    >>> import greenagents as ga
    >>> [r.value for r in ga.each(["a", "bb"], len)]
    [1, 2]
    """
    if not callable(fn):
        raise errors.InputError(f"each(items, fn): fn is {fn!r:.60}, not a callable; e.g. "
                                "ga.each(texts, MyAgent) or ga.each(urls, fetch)")
    calls: Iterator[Call] = ((fn, (item,), {}) for item in items)
    options = _Options(max_concurrent, timeout, deadline, progress, max_errors, warn_failures)
    return _collect(_stream(calls, _size(items), options, stacklevel=3), None)


_warned_spawn = False


def spawn(fn: Callable[..., T], *args: Any, **kwargs: Any) -> gevent.Greenlet[Any, T]:
    """Start ``fn(*args, **kwargs)`` in a greenlet (with the caller's contextvars); ``.get()`` it.

    >>> import greenagents as ga
    >>> ga.spawn(max, 1, 5).get()
    5
    """
    global _warned_spawn
    if not available() and not _warned_spawn:
        _warned_spawn = True
        warnings.warn("greenagents.spawn: the standard library is not monkey-patched, so spawned "
                      f"calls that block on I/O run one after another. To patch, {how_to_patch()}.",
                      NotPatchedWarning, stacklevel=2)
    return gevent.spawn(contextvars.copy_context().run, fn, *args, **kwargs)
