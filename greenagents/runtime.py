"""Run many synchronous calls at once: ``batch``, ``each``, ``stream`` and ``spawn``.

Each call runs in its own greenlet, at most ``max_concurrent`` at a time; every input yields exactly
one :class:`~greenagents.Result`, whatever happens to the others. In a process that is not
monkey-patched the same functions run the calls in real threads instead (with one warning), so
they stay correct and concurrent — never silently one by one.

>>> import greenagents as ga
>>> [r.value for r in ga.each([1, 2, 3], lambda n: n * n)]
[1, 4, 9]

The scheduler underneath is in three parts, each usable on its own (Celery's dispatcher and
worker use them): :mod:`~greenagents.backends` (greenlets or threads), :mod:`~greenagents.feeder`
(the input, read lazily) and :mod:`~greenagents.run` (bound, deadline, results, cancellation);
:func:`greenagents.calls.run_call` runs one call as a batch would. This module checks the
options and shapes the Results (in input order, or as they complete).
"""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import gevent

from . import errors
from .backends import NotPatchedWarning
from .config import settings
from .feeder import check_shapes
from .patching import available, how_to_patch
from .progress import Progress
from .result import Result, call_target, target_name
from .run import Run
from .summaries import CallsFailedWarning

if TYPE_CHECKING:
    from .budgets import Budget

__all__ = ["CallsFailedWarning", "NotPatchedWarning", "batch", "call_target", "each", "spawn",
           "stream", "target_name"]

T = TypeVar("T")
Call = tuple[Callable[..., Any], dict[str, Any]] | tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _checked_concurrency(max_concurrent: int | None) -> int:
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
    max_cost_usd: float | None = None


def _run_budget(max_cost_usd: float | None) -> Budget | None:
    if max_cost_usd is None:
        return None
    # Imported here, not at the top: the CLI imports this module before it patches, and budgets
    # brings in limits and their locks, which must be gevent's once the CLI has patched.
    from .budgets import Budget

    return Budget(max_cost_usd)


def _stream(calls: Iterable[Any], total: int | None, options: _Options,
            stacklevel: int) -> Iterator[Result[Any]]:
    run = Run(_checked_concurrency(options.max_concurrent), _checked_seconds("timeout", options.timeout),
               _checked_seconds("deadline", options.deadline),
               _checked_max_errors(options.max_errors), options.warn_failures, stacklevel,
               _run_budget(options.max_cost_usd))
    progress = options.progress
    enabled = settings().progress if progress is None else progress
    return run.results(enumerate(calls), Progress(total, enabled=enabled))


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
           warn_failures: bool = True, max_cost_usd: float | None = None
           ) -> Iterator[Result[Any]]:
    """Run ``calls`` concurrently and yield each :class:`Result` as it completes.

    ``calls`` is consumed lazily, so a generator of a million calls runs in memory proportional to
    ``max_concurrent``, not to its length. It is read by a greenlet (a thread, unpatched) of its
    own, with the caller's contextvars, so a slow iterable never holds back the Results already
    finished; an exception it raises ends the run with that exception. ``timeout`` bounds each
    call; ``deadline`` bounds the whole run (calls still running or not started then get a
    ``Timeout`` error). Once more than ``max_errors`` calls failed, no new call starts: the calls
    running and the rest end at once as :class:`~greenagents.errors.Aborted`. A run that ends
    with failures warns once (:class:`CallsFailedWarning`, by error type with the first message
    of each) unless ``warn_failures=False``. ``max_cost_usd`` is this run's budget (see
    :mod:`greenagents.budgets`): agent attempts that could cross it end as ``BudgetExceeded``
    without being sent. Leaving the loop early (``break``, an exception) stops the calls still
    running. A list with a call that is not ``(fn, kwargs)`` or ``(fn, args, kwargs)`` raises
    :class:`~greenagents.errors.InputError` before any call runs.

    >>> import greenagents as ga
    >>> sorted(r.value for r in ga.stream([(abs, (-1,), {}), (abs, (-2,), {})]))
    [1, 2]
    """
    check_shapes(calls)
    options = _Options(max_concurrent, timeout, deadline, progress, max_errors, warn_failures,
                       max_cost_usd)
    return _stream(calls, _size(calls), options, stacklevel=1)


def batch(calls: Iterable[Call], *, max_concurrent: int | None = None,
          timeout: float | None = None, deadline: float | None = None,
          progress: bool | None = None,
          on_result: Callable[[Result[Any]], object] | None = None,
          max_errors: int | None = None, warn_failures: bool = True,
          max_cost_usd: float | None = None) -> list[Result[Any]]:
    """Run ``calls`` concurrently; one :class:`Result` per call, in input order.

    Each call is ``(fn, kwargs)`` or ``(fn, args, kwargs)``; ``fn`` may be any callable, an Agent
    class included. ``on_result`` sees each Result as it completes; if it raises, the calls still
    running are stopped and the exception propagates. Ctrl-C stops them too and raises
    :class:`~greenagents.errors.Interrupted` (a ``KeyboardInterrupt``) whose ``results`` are
    the Results finished so far. ``max_errors``, ``warn_failures`` and ``max_cost_usd`` are those of
    :func:`stream`.

    >>> import greenagents as ga
    >>> [r.value for r in ga.batch([(divmod, (7, 2), {}), (pow, {"base": 2, "exp": 8})])]
    [(3, 1), 256]
    """
    check_shapes(calls)
    options = _Options(max_concurrent, timeout, deadline, progress, max_errors, warn_failures,
                       max_cost_usd)
    return _collect(_stream(calls, _size(calls), options, stacklevel=3), on_result)


def each(items: Iterable[Any], fn: Callable[[Any], T], *, max_concurrent: int | None = None,
         timeout: float | None = None, deadline: float | None = None,
         progress: bool | None = None, max_errors: int | None = None,
         warn_failures: bool = True, max_cost_usd: float | None = None) -> list[Result[T]]:
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
    options = _Options(max_concurrent, timeout, deadline, progress, max_errors, warn_failures,
                       max_cost_usd)
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
