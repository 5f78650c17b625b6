"""One call, one :class:`~greenagents.Result`: what every run does for each of its calls.

:func:`run_call` is the public single-call form: it runs ``fn(*args, **kwargs)`` in the caller's
own greenlet (or thread) exactly as :func:`greenagents.batch` runs each call — the per-call
timeout, the hooks' CallStarted/CallEnded, the run id and input index for the execution log, the
error held in the Result and scrubbed of secrets — without a pool around it. A Celery task runs
its call this way; so can any code that wants one call's Result and no batch.

>>> run_call(divmod, (7, 2)).value
(3, 1)
>>> run_call(int, ("x",), index=4).error
ValueError("invalid literal for int() with base 10: 'x'")
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from typing import Any

import gevent

from . import errors, hooks, runs
from .asyncbridge import explain_running_loop
from .backends import Backend, Expired, GreenBackend, ThreadBackend
from .patching import available
from .result import Result, target_name

__all__ = ["invoke", "run_call"]


def run_call(fn: Callable[..., Any], args: tuple[Any, ...] | list[Any] = (),
             kwargs: dict[str, Any] | None = None, *, index: int | None = None,
             timeout: float | None = None) -> Result[Any]:
    """Run one call in this greenlet (or thread) as a batch would; its :class:`Result`, never an
    exception (only a kill, ``GreenletExit``, passes through).

    ``index`` is the Result's (and the execution log's ``input_index``); ``timeout`` bounds the
    call. The call joins the caller's run if there is one, else gets a run id of its own.
    """
    backend = GreenBackend() if available() else ThreadBackend()
    context = contextvars.copy_context()
    context.run(runs.run_id.set, runs.run_id.get() or runs.new_run_id())
    context.run(runs.input_index.set, index)
    return context.run(invoke, index, fn, tuple(args), kwargs or {}, timeout, backend)


def invoke(index: int | None, fn: Callable[..., Any], args: tuple[Any, ...],
           kwargs: dict[str, Any], timeout: float | None, backend: Backend) -> Result[Any]:
    """:func:`_outcome`, told to the hooks' listeners (a CallStarted, then a CallEnded)."""
    call = hooks.call_opened(target_name(fn), fn, index=index,
                             agent=hasattr(fn, "__greenagents_call__")) if hooks.active else None
    if call is None:
        return _outcome(index, fn, args, kwargs, timeout, backend)
    try:
        result = _outcome(index, fn, args, kwargs, timeout, backend)
    except BaseException as exc:  # a kill: the listeners still see the call end
        hooks.call_closed(call, Result(index, call.target, error=exc))
        raise
    hooks.call_closed(call, result)
    return result


def _outcome(index: int | None, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any], timeout: float | None, backend: Backend) -> Result[Any]:
    """Run one call and describe it as a Result; only a kill (GreenletExit) escapes."""
    hook = getattr(fn, "__greenagents_call__", None)
    start = time.perf_counter()
    try:
        if timeout is not None:
            value = backend.within(functools.partial(hook, args, kwargs) if hook is not None
                                   else functools.partial(fn, *args, **kwargs), timeout)
        elif hook is not None:  # called here, not through a helper: one frame less per call
            value = hook(args, kwargs)  # packed: see Agent.__greenagents_call__
        else:
            value = fn(*args, **kwargs)
    except gevent.GreenletExit:
        raise
    except Expired:
        error = errors.Timeout(f"{target_name(fn)} did not finish within timeout={timeout}s; "
                               "raise the timeout or make the call faster")
        return Result(index, target_name(fn), error=error, duration_s=time.perf_counter() - start)
    except gevent.Timeout as exc:  # the call's own timer, not ours: its error
        return Result(index, target_name(fn), error=exc, duration_s=time.perf_counter() - start)
    except BaseException as exc:  # a call's failure is its Result's, never the batch's
        return Result(index, target_name(fn),
                      error=errors.scrub(explain_running_loop(exc) if backend.green else exc),
                      duration_s=time.perf_counter() - start)
    if hook is not None and isinstance(value, Result):
        value.index = index
        return value
    return Result(index, target_name(fn), value=value, duration_s=time.perf_counter() - start)
