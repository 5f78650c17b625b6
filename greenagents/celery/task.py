"""The Celery tasks greenagents needs, ``greenagents.call_many`` and ``greenagents.call``, and an
app configured for them.

``greenagents.call_many`` takes a chunk of calls, each a target by reference (``"module:Name"``,
importable by the worker), its arguments, its index and its key; runs them at once, each exactly
like :func:`greenagents.batch` would (a :class:`~greenagents.run.Run`); and stores each call's
Result, in its :mod:`~greenagents.celery.wire` form, under the call's key. ``greenagents.call``
runs one call (:func:`~greenagents.calls.run_call`) and returns that form: what tasks made by
:func:`register` do. Agents need no per-class registration::

    from greenagents.celery import app_for
    app = app_for("redis://127.0.0.1:6379/0")   # broker, result backend, reliability settings

Reliability, and why each setting:

* ``acks_late`` — a message is acknowledged only after its calls finished and their Results are
  stored; a worker killed mid-call (even SIGKILL) leaves it unacknowledged, and Redis hands it to
  another worker once ``visibility_timeout`` has passed.
* ``reject_on_worker_lost`` — the same for a prefork child that dies (the gevent pool has none:
  there the whole worker dies, and the point above applies).
* ``worker_prefetch_multiplier=1`` — a worker reserves only as many messages as it runs (``-c``),
  so the rest wait in Redis for any worker, and a crash puts back at most ``-c`` messages.
* **STARTED** — a worker stores STARTED when it begins a message (``track_started``; the chunk
  task writes it itself, in the round trip that reads its calls' stored Results), which tells
  the dispatcher it left the queue safely; one the queue handed out but no worker started was
  lost with its worker, and the dispatcher sends it again (see :mod:`greenagents.celery.dispatch`).
* **idempotency** — each call has a key, ``"<batch_id>:<index>"``; a message's task id is its
  first call's key plus the run (``"<batch_id>:<index>:<run>"``), so a later run of the same
  batch is not refused by workers that remember the ids an earlier run revoked. Before
  computing, the task looks for the Results already stored under its calls' keys: a call of a
  redelivered chunk that had finished (the worker died between storing and acknowledging), or
  one a previous run finished, is answered from the store and not run again.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import celery

import greenagents as ga
from greenagents import errors
from greenagents.calls import run_call
from greenagents.celery import fixes, sweeper, tracing, wire
from greenagents.celery.store import ResultStore
from greenagents.result import target_name
from greenagents.run import Run

__all__ = ["CHUNK_TASK_NAME", "TASK_NAME", "app_for", "install", "load_target", "reference",
           "register"]

assert tracing  # imported for its signal handlers: trace context in the messages' headers

TASK_NAME = "greenagents.call"  # one call per message (and tasks made by register())
CHUNK_TASK_NAME = "greenagents.call_many"  # a chunk of calls per message: what batches send
_WRITE_EVERY_S = 0.05  # a chunk's finished Results wait at most this long to be written together


@functools.lru_cache(maxsize=256)
def load_target(reference: str) -> Any:
    """The function or agent class a ``"module:QualName"`` reference names, imported.

    >>> load_target("builtins:divmod")
    <built-in function divmod>
    """
    module_name, _, name = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _loaded(reference: str, index: int) -> Callable[..., Any] | ga.Result[Any]:
    """The target of ``reference``, or the Result saying why the worker cannot import it."""
    try:
        return load_target(reference)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        return ga.Result(index, reference, error=errors.ConfigError(import_problem(reference, exc)))


def _call(task: celery.Task, reference: str, args: list[Any], kwargs: dict[str, Any], index: int,
          timeout: float | None = None, key: str | None = None) -> dict[str, Any]:
    """Body of ``greenagents.call``: the Result stored under the call's ``key`` if there is one,
    else run the call (and store its Result under ``key`` too, for any later run asking)."""
    key = key or task.request.id
    store = ResultStore(task.backend)
    stored = store.read([key])[0]
    if stored is not None:
        return stored
    target = _loaded(reference, index)
    result = target if isinstance(target, ga.Result) else run_call(target, args, kwargs,
                                                                    index=index, timeout=timeout)
    data = wire.to_json(result)
    if key != task.request.id:
        store.write([(key, data)])
    return data


def _call_many(task: celery.Task, calls: list[list[Any]], timeout: float | None = None,
               inbox: str | None = None) -> int:
    """Body of ``greenagents.call_many``: run a chunk of calls, ``[reference, args, kwargs, index,
    key]`` each, at once; store each one's Result under its key as it finishes, and announce it
    on the dispatcher's ``inbox`` (see :mod:`~greenagents.celery.store`); how many calls.

    Calls whose Result is stored already (a redelivered chunk whose worker died midway, or an
    earlier run of the batch) are not run again: their stored Result is announced instead. Writes
    are grouped: whatever finished since the last write goes in one round trip, at most every
    ``_WRITE_EVERY_S``, and the rest at the end.
    """
    store = ResultStore(task.backend)
    started = {"pid": os.getpid(), "hostname": task.request.hostname}
    stored = store.begin(task.request.id, started, [key for *_, key in calls])
    keys: dict[int, str] = {}
    todo: list[tuple[int, Any]] = []
    ready: list[tuple[str, dict[str, Any]]] = []
    for (reference, args, kwargs, index, key), known in zip(calls, stored, strict=True):
        if known is not None:
            ready.append((key, known))
            continue
        keys[index] = key
        target = _loaded(reference, index)
        if isinstance(target, ga.Result):
            ready.append((key, wire.to_json(target)))
        else:
            todo.append((index, (target, tuple(args), kwargs)))
    written = time.monotonic()
    if todo:
        for result in Run(len(todo), timeout=timeout, warn=False).results(todo):
            ready.append((keys[result.index], wire.to_json(result)))  # type: ignore[index]
            if time.monotonic() - written >= _WRITE_EVERY_S:
                store.write(ready, inbox)
                ready, written = [], time.monotonic()
    store.write(ready, inbox)
    return len(calls)


def import_problem(reference: str, exc: BaseException) -> str:
    """Why a worker could not import ``reference``, and where it looked: its working directory
    (which ``celery worker`` does not put on ``sys.path``) and its ``PYTHONPATH``.

    >>> import_problem("myproject.agents:A", ImportError("No module named 'myproject'"))
    ... # doctest: +ELLIPSIS
    "the worker cannot import myproject.agents:A (ImportError: No module named 'myproject'); it ran in ..."
    """
    cwd, path = os.getcwd(), os.environ.get("PYTHONPATH")
    on_path = cwd in sys.path or "" in sys.path or "." in sys.path
    return (f"the worker cannot import {reference} ({type(exc).__name__}: {exc}); it ran in {cwd} "
            f"({'on' if on_path else 'not on'} sys.path) with PYTHONPATH="
            f"{path if path else '(unset)'}. Start workers with PYTHONPATH set to the directory "
            f"that holds {reference.partition(':')[0].split('.')[0]} (e.g. `PYTHONPATH=. celery -A "
            "...` from your project root), on every machine")


# The task options every greenagents task has (see the module's docstring for why).
_RELIABLE: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True,
                             "track_started": True}
# The chunk task's: it marks itself STARTED (ResultStore.begin: one round trip where Celery's
# own mark takes two and a publish), and its return value, a count, is not stored (each call's
# Result is): Celery's SUCCESS write was another two round trips per message. Its failures
# (revoked, say) are still stored: the dispatcher reads them.
_CHUNK: dict[str, Any] = {**_RELIABLE, "track_started": False, "ignore_result": True,
                          "store_errors_even_if_ignored": True}


def reference(fn: Callable[..., Any]) -> str:
    """``module:QualName`` of ``fn``, as a worker imports it; an InputError when none can.

    >>> reference(divmod)
    'builtins:divmod'
    """
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or not name or "<locals>" in name:
        raise errors.InputError(
            f"{target_name(fn)} cannot be imported by a worker; define it at the top level of a "
            "module that the workers can import too")
    return f"{module}:{name}"


def register(app: celery.Celery, target: Callable[..., Any], *, name: str | None = None) -> celery.Task:
    """Register ``target`` (an Agent class or a function) as a Celery task of its own on ``app``.

    For your own canvases: ``sentiment = register(app, SentimentAgent)``, then
    ``sentiment.delay(text="...")``, ``sentiment.s(text=...)`` in a ``group`` or ``chain``. The
    task runs ``target`` as :func:`greenagents.batch` would (never raises for the call's own
    failure) and returns the JSON form of its Result: :func:`~greenagents.celery.from_json` turns
    it back. It has the reliability settings of ``greenagents.call`` (late acknowledgement,
    STARTED marks, the stored Result answering a redelivery). Call it in the worker's app module
    too, so workers know the task; the ready-made worker does for the targets in
    ``GREENAGENTS_CELERY_TASKS``. ``name`` defaults to ``"greenagents:<module:Name>"``.

    >>> from celery import Celery
    >>> register(Celery("mine"), divmod).name
    'greenagents:builtins:divmod'
    """
    ref = reference(target)

    def run(task: celery.Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _call(task, ref, list(args), kwargs, 0)

    run.__doc__ = f"Run {ref} once; the JSON form of its greenagents Result."
    return app.task(run, name=name or f"greenagents:{ref}", bind=True, **_RELIABLE)


def install(app: celery.Celery) -> celery.Task:
    """Register ``greenagents.call`` and ``greenagents.call_many`` on ``app`` (idempotent); the
    chunk task, which batches send.

    Use it with an app you configure yourself; :func:`app_for` does it for you.

    >>> from celery import Celery
    >>> install(Celery("mine")).name
    'greenagents.call_many'
    """
    fixes.apply()
    sweeper.install(app)
    app.task(_call, name=TASK_NAME, bind=True, **_RELIABLE)
    return app.task(_call_many, name=CHUNK_TASK_NAME, bind=True, **_CHUNK)


def app_for(url: str, *, visibility_timeout: float = 3600.0) -> celery.Celery:
    """A Celery app using Redis at ``url`` as broker and result backend, with the task installed.

    ``visibility_timeout`` is how long a message may stay unacknowledged before Redis gives it to
    another worker. It must exceed the longest a call can take *after its worker reserved it*
    (retries, backoff, rate-limit waits, timeouts): shorter, and slow calls run twice. The
    default, an hour, suits production; a crash then delays that worker's calls by up to an
    hour. Tests use a few seconds.

    >>> app_for("redis://127.0.0.1:6379/0").conf.worker_prefetch_multiplier
    1
    """
    app = celery.Celery("greenagents", broker=url, backend=url)
    sweep = max(1, min(60, int(visibility_timeout / 4)))  # look for lost messages this often
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility_timeout,
                                  "unacked_restore_interval": sweep,
                                  "unacked_restore_throttle": 1,
                                  # kombu's default of 10 fails acks when 100 greenlets finish at once
                                  "max_connections": None})
    install(app)
    return app
