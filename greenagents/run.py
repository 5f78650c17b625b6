"""One run of many calls: its bound, its deadline, its results, its cancellation.

A :class:`Run` takes ``(index, call)`` pairs (read by a :class:`~greenagents.feeder.Feeder`) and
yields one :class:`~greenagents.Result` per call as each completes. Each call runs as a task of
the run's :mod:`backend <greenagents.backends>`, started up to ``WINDOW`` × the bound ahead and
parked on the bound until a slot frees up; the caller's greenlet (or thread) collects. It is the
engine under :func:`greenagents.stream` and ``batch``, and under a Celery worker's chunk of calls:

>>> from greenagents.run import Run
>>> sorted(r.value for r in Run(concurrency=2).results([(7, (abs, (-7,), {})), (9, (abs, (-9,), {}))]))
[7, 9]

Every input yields exactly one Result, whatever happens to the others: a call past the run's
``deadline`` (running, or not started) gets a ``Timeout``; once more than ``max_errors`` failed,
the rest end as ``Aborted``; leaving the loop early stops the calls still running.

Pitfalls handled here (see gevent's docs for the why):

* Greenlets start with an *empty* ``contextvars`` context; each call runs in a copy of the
  caller's context, so tracing and tenant ids set by the caller reach the call.
* The hub prints a traceback for every greenlet that dies with an error, even a handled one;
  workers catch everything, so a batch with 1,000 failures prints nothing.
* Ctrl-C reaches the caller; the hub is told not to print it first (:func:`_quiet_interrupts`).
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import gevent

from . import errors, hooks, runs, slots
from .backends import EMPTY, backend_for
from .calls import invoke
from .feeder import FED_ALL, Fed, Feeder, FeedFailed, unpack_call
from .progress import Progress
from .result import Result, call_target, target_name
from .summaries import ErrorTally, warn_failures

if TYPE_CHECKING:
    from .budgets import Budget

__all__ = ["WINDOW", "Run"]

# Calls started ahead of the bound, parked on it: they take a slot the moment one frees up (a
# finished call, or one sleeping through a retry backoff). Memory stays O(concurrency).
WINDOW = 2


class Run:
    """One batch or stream: ``concurrency`` calls at once, each within ``timeout``, all within
    ``deadline``; at most ``max_errors`` failures before the rest are Aborted.

    ``warn`` says whether a run with failures warns once (``stacklevel``: frames from
    :meth:`results` to the user's code); ``spend`` is the run's budget, if any.
    """

    def __init__(self, concurrency: int, timeout: float | None = None, deadline: float | None = None,
                 max_errors: int | None = None, warn: bool = True, stacklevel: int = 1,
                 spend: Budget | None = None):
        self.backend = backend_for(concurrency, stacklevel=4)
        self.spend = spend
        self.concurrency = concurrency
        self.timeout = timeout
        self.deadline = deadline
        self.max_errors = max_errors
        self.warn, self.stacklevel = warn, stacklevel
        self.tally = ErrorTally()
        self.finished = 0
        self.run_id = runs.run_id.get() or runs.new_run_id()  # a batch inside a run joins it
        self.cancelled = False
        self.free_slots = self.backend.semaphore(concurrency)
        self.done = self.backend.queue()

    def _start(self, index: int, fn: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> None:
        context = contextvars.copy_context()
        if self.spend is not None:
            self.spend.scope(context)
        self.backend.start(self._work, index, fn, args, kwargs, context=context)

    def _work(self, index: int, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
        # this worker's own context copy: nothing to reset
        runs.run_id.set(self.run_id)  # what the execution log records for the call
        runs.input_index.set(index)
        slot = slots.Slot(self.free_slots)
        slots.current.set(slot)
        with hooks.waiting("slot"):
            slot.acquire()
        try:
            if self.cancelled:
                return
            result = invoke(index, fn, args, kwargs, self.timeout, self.backend)
        finally:
            slot.release()
        self.done.put(result)

    def _next(self, ends_at: float | None) -> Any:
        """The next event (a finished Result, or the feeder's), or None when the deadline passed."""
        while True:
            wait = None if ends_at is None else ends_at - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            event = self.backend.get(self.done, wait)
            if event is not EMPTY:
                return event

    def _cancel(self) -> None:
        self.cancelled = True
        self.backend.stop_all()

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

    def results(self, calls: Iterable[tuple[int, Any]],
                bar: Progress | None = None) -> Iterator[Result[Any]]:
        """Run ``calls``, ``(index, call)`` pairs read lazily; each Result as it completes."""
        bar = bar or Progress(None, enabled=False)
        pending: dict[int, str] = {}
        source = iter(calls)
        ends_at = None if self.deadline is None else time.monotonic() + self.deadline
        fed_all = False
        feeder = Feeder(source, self.backend, self.done, self.concurrency * WINDOW)
        if self.backend.green:
            _quiet_interrupts(gevent.get_hub())
        with bar:
            try:
                while not (fed_all and not pending):
                    event = self._next(ends_at)
                    if event is None:
                        yield from self._deadline_passed(pending, source, feeder, bar)
                        return
                    if event is FED_ALL:
                        fed_all = True
                    elif isinstance(event, FeedFailed):
                        raise event.error
                    elif isinstance(event, Fed):
                        try:
                            fn, args, kwargs = unpack_call(event.index, event.call)
                        except errors.InputError as exc:
                            feeder.taken()
                            yield self._emit(Result(event.index, "", error=exc), bar)
                        else:
                            pending[event.index] = target_name(fn)
                            self._start(event.index, fn, args, kwargs)
                    else:
                        del pending[event.index]
                        feeder.taken()
                        if isinstance(event.error, (KeyboardInterrupt, SystemExit)):
                            raise event.error
                        yield self._emit(event, bar)
                    if self.max_errors is not None and self.tally.failed > self.max_errors:
                        yield from self._abort(pending, source, feeder, bar)
                        return
                self._ended()
            finally:
                self._cancel()
                feeder.stop()

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

    def _stop_early(self, pending: dict[int, str], source: Iterator[tuple[int, Any]],
                    feeder: Feeder, bar: Progress, *, running: Callable[[], BaseException],
                    unstarted: Callable[[], BaseException]) -> Iterator[Result[Any]]:
        """Stop every call, keep what finished; ``running`` is the error of the calls stopped,
        ``unstarted`` that of the calls not started (the deadline passed, or max_errors)."""
        self._cancel()
        feeder.halt()  # it ends after the call it is reading, if any: that one is timed out too
        fed: list[Fed] = []
        failure: BaseException | None = None
        while (event := self.backend.get_nowait(self.done)) is not EMPTY:
            # results that arrived while cancelling are real answers: keep them
            if isinstance(event, Fed):
                fed.append(event)
            elif isinstance(event, FeedFailed):
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


def _quiet_interrupts(hub: Any) -> None:
    """Ctrl-C reaches the caller (as :class:`~greenagents.errors.Interrupted` from a batch); the
    hub need not also print it with a timestamp first. Left in place for later runs: it is the
    same for every run of this hub, and restoring it would race between concurrent runs."""
    if KeyboardInterrupt not in hub.NOT_ERROR:
        hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)
