"""``batch`` and ``stream`` through Celery: the calls of :func:`greenagents.batch`, on many workers.

Each call becomes one ``greenagents.call`` message whose task id is its idempotency key,
``"<batch_id>:<index>"``. Results are read back from the result backend as they land (one Redis
``MGET`` of the pending keys per poll), decoded into the same :class:`~greenagents.Result`
objects a local run gives: agent outputs as their pydantic models, errors as their classes::

    import greenagents.monkey
    import greenagents.celery as ga_celery

    app = ga_celery.app_for("redis://127.0.0.1:6379/0")
    results = ga_celery.batch(app, [(SentimentAgent, {"text": t}) for t in texts])

Giving the same ``batch_id`` again (say, after the caller crashed) re-dispatches the calls, but
each finds its stored Result and answers at once: nothing is asked twice.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import celery
import celery.exceptions
from pydantic import TypeAdapter

from greenagents import errors, jsonl
from greenagents.agent import Agent
from greenagents.celery import wire
from greenagents.celery.task import install
from greenagents.config import settings
from greenagents.progress import Progress
from greenagents.result import Result
from greenagents.runtime import Call, _unpack, target_name

__all__ = ["batch", "reference", "stream"]

_POLL_S = 0.1  # how often pending results are fetched

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


def _output(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """How to validate a value back into what ``fn`` returns: an agent's ``output`` type."""
    return TypeAdapter(fn.output) if isinstance(fn, type) and issubclass(fn, Agent) else None


class _Dispatch:
    """One batch on Celery: the calls sent (task id → index, target, output type)."""

    def __init__(self, app: celery.Celery, batch_id: str, timeout: float | None):
        self.app, self.task, self.batch_id, self.timeout = app, install(app), batch_id, timeout
        self.pending: dict[str, tuple[int, str, TypeAdapter[Any] | None]] = {}

    def send(self, calls: Iterable[Any]) -> Iterator[Result[Any]]:
        """Send every call; yield a Result for each one that cannot be sent."""
        outputs: dict[Any, TypeAdapter[Any] | None] = {}
        with self.app.producer_or_acquire() as producer:
            for index, call in enumerate(calls):
                try:
                    fn, args, kwargs = _unpack(index, call)
                    ref = reference(fn)
                except errors.InputError as exc:
                    yield Result(index, "", error=exc)
                    continue
                if fn not in outputs:
                    outputs[fn] = _output(fn)
                task_id = f"{self.batch_id}:{index}"
                self.pending[task_id] = (index, target_name(fn), outputs[fn])
                payload = json.loads(jsonl.dumps([ref, args, kwargs, index, self.timeout]))
                self.task.apply_async(payload, task_id=task_id, producer=producer)

    def receive(self, deadline: float | None) -> Iterator[Result[Any]]:
        """The Results as they are stored; Timeout errors for those the deadline left out.

        One ``MGET`` of the pending keys per poll: cheap, and no per-result subscription or
        ``AsyncResult`` object to clean up.
        """
        try:
            for task_id, meta in self.app.backend.get_many(set(self.pending), interval=_POLL_S,
                                                           timeout=deadline):
                index, target, output = self.pending.pop(task_id)
                yield _decoded(index, target, output, meta)
        except celery.exceptions.TimeoutError:
            late = sorted(self.pending.values())
            self.cancel()
            problem = (f"the run's deadline of {deadline}s passed before this call finished; "
                       "raise deadline= or add workers")
            for index, target, _ in late:
                yield Result(index, target, error=errors.Timeout(problem))

    def cancel(self) -> None:
        """Revoke the calls not finished, so workers skip those still queued.

        Workers remember revoked ids: run a revoked call again under a new ``batch_id``.
        """
        if self.pending:
            self.app.control.revoke(list(self.pending))
            self.pending.clear()


def _decoded(index: int, target: str, output: TypeAdapter[Any] | None,
             meta: dict[str, Any]) -> Result[Any]:
    if meta["status"] == celery.states.SUCCESS:
        return wire.from_json(meta["result"], output)
    error = meta["result"]  # the task never raises; this is Celery's own failure (e.g. revoked)
    if not isinstance(error, BaseException):
        error = errors.GreenAgentsError(f"Celery reported {meta['status']}: {error}")
    return Result(index, target, error=error)


def stream(app: celery.Celery, calls: Iterable[Call], *, timeout: float | None = None,
           deadline: float | None = None, progress: bool | None = None,
           batch_id: str | None = None) -> Iterator[Result[Any]]:
    """Run ``calls`` on the app's Celery workers; yield each :class:`Result` as it completes.

    Like :func:`greenagents.stream`, but every call is sent at once (Redis holds the queue) and
    workers run them, ``-c`` at a time each. ``timeout`` bounds each call (on its worker);
    ``deadline`` the whole run: calls unfinished then get a ``Timeout`` error and are revoked.
    ``batch_id`` (default: random) names the batch: reuse it to collect a batch again without
    recomputing what finished. Targets must be importable by the workers (``module:Name``).

    >>> results = stream(app, [(SentimentAgent, {"text": "hi"})])    # doctest: +SKIP
    """
    run = _Dispatch(app, batch_id or uuid.uuid4().hex, timeout)
    enabled = settings().progress if progress is None else progress
    size = len(calls) if isinstance(calls, Sized) else None
    with Progress(size, enabled=enabled) as bar:
        try:
            for result in itertools.chain(run.send(calls), run.receive(deadline)):
                bar.update(ok=result.ok)
                yield result
        finally:
            run.cancel()


def batch(app: celery.Celery, calls: Iterable[Call], *, timeout: float | None = None,
          deadline: float | None = None, progress: bool | None = None,
          batch_id: str | None = None) -> list[Result[Any]]:
    """Run ``calls`` on the app's Celery workers; one :class:`Result` per call, in input order.

    >>> [r.value for r in batch(app, [(divmod, (7, 2), {})])]      # doctest: +SKIP
    [[3, 1]]
    """
    results = list(stream(app, calls, timeout=timeout, deadline=deadline, progress=progress,
                          batch_id=batch_id))
    return sorted(results, key=lambda r: r.index or 0)
