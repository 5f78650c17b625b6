"""``batch`` and ``stream`` through Celery: the calls of :func:`greenagents.batch`, on many workers.

Each call becomes one ``greenagents.call`` message carrying its idempotency key,
``"<batch_id>:<index>"`` (its task id adds the run). Results are read back from the result
backend as they land (one Redis ``MGET`` of the pending keys per poll), decoded into the same
:class:`~greenagents.Result` objects a local run gives: agent outputs as their pydantic models,
errors as their classes::

    import greenagents.monkey
    import greenagents.celery as ga_celery

    app = ga_celery.app_for("redis://127.0.0.1:6379/0")
    results = ga_celery.batch(app, [(SentimentAgent, {"text": t}) for t in texts])

Giving the same ``batch_id`` again (say, after the caller crashed, or a deadline or Ctrl-C
revoked the rest) re-dispatches the calls: those finished find their stored Result and answer
at once, nothing is asked twice, and the others run.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import celery
import celery.states
import gevent
import gevent.queue
from pydantic import TypeAdapter

from greenagents import errors, jsonl
from greenagents.agent import Agent
from greenagents.celery import wire
from greenagents.celery.task import install, reference
from greenagents.config import settings
from greenagents.patching import available
from greenagents.progress import Progress
from greenagents.result import Result
from greenagents.runtime import _FED_ALL, Call, _FeedFailed, _unpack, call_target, target_name

__all__ = ["batch", "stream"]

_POLL_S = 0.1  # how often pending results are fetched
_PIPELINE = 200  # calls sent to Redis in one round trip

log = logging.getLogger("greenagents.celery")


def _output(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """How to validate a value back into what ``fn`` returns: an agent's ``output`` type."""
    return TypeAdapter(fn.output) if isinstance(fn, type) and issubclass(fn, Agent) else None


@dataclass
class _Sent:
    """A call on its way: where its Result goes, and what to send again if it is lost."""

    index: int
    target: str
    output: TypeAdapter[Any] | None
    payload: list[Any] | None  # dropped once a worker started the call: from then on, it is safe
    seq: int  # its place in the queue's order, renewed when sent again


class _Dispatch:
    """One batch on Celery: the calls sent, their Results read back, and the lost ones sent again.

    **Lost calls.** Celery's Redis transport takes a message off the queue (``BRPOP``) and only
    then records it as unacknowledged; a worker killed between the two, or before it read the
    reply waiting in its socket, takes the message with it: no ``visibility_timeout`` brings it
    back (celery/celery#4354, celery/kombu#305). The dispatcher sees such a loss: workers report
    each call they start (``track_started``), the queue hands out calls in the order they were
    sent, so a call still not started once calls sent after it have been started for
    ``visibility_timeout`` seconds is lost (or stuck in a worker that long, where the broker would
    hand it out again too). It is sent again under the same task id; if it was only late after
    all, the idempotency check answers the second copy from the store.
    """

    def __init__(self, app: celery.Celery, batch_id: str, timeout: float | None,
                 deadline: float | None):
        self.app, self.task, self.batch_id, self.timeout = app, install(app), batch_id, timeout
        self.run = uuid.uuid4().hex[:8]  # task ids are new each run; keys stay "batch:index"
        self.deadline = deadline
        self.end = None if deadline is None else time.monotonic() + deadline
        self.backend = app.backend
        self.grace = float(app.conf.broker_transport_options.get("visibility_timeout", 3600))
        self.pending: dict[str, _Sent] = {}
        self.unstarted: deque[tuple[int, str]] = deque()  # (seq, task id), in the order sent
        self.seq = 0
        self.frontier = -1  # the latest seq seen started or finished
        self.advances: deque[tuple[float, int]] = deque()  # (when, frontier) as it moved on
        self.next_poll = 0.0  # time.monotonic() of the next look at the stored Results

    def send(self, calls: Iterable[Any]) -> Iterator[Result[Any]]:
        """Send every call; yield a Result for each one that cannot be sent, and those finished
        already: in a long batch the first Results come while the last calls are being sent,
        and from a slow iterable (a pipe) while it has not given its next call yet."""
        outputs: dict[Any, TypeAdapter[Any] | None] = {}
        arrivals = _arrivals(calls, lambda: self.next_poll - time.monotonic())
        with self.app.producer_or_acquire() as producer, _pipelined(producer) as pipeline:
            for arrival in arrivals:
                if arrival is not None:
                    index, call = arrival
                    if self.end is not None and time.monotonic() >= self.end:
                        yield from self._too_late(itertools.chain([arrival], arrivals))
                        return
                    try:
                        fn, args, kwargs = _unpack(index, call)
                        ref = reference(fn)
                    except errors.InputError as exc:
                        yield Result(index, "", error=exc)
                        continue
                    if fn not in outputs:
                        outputs[fn] = _output(fn)
                    key = f"{self.batch_id}:{index}"
                    payload = json.loads(jsonl.dumps([ref, args, kwargs, index, self.timeout, key]))
                    sent = _Sent(index, target_name(fn), outputs[fn], payload, seq=-1)
                    self._send(f"{key}:{self.run}", sent, producer)
                    if time.monotonic() < self.next_poll:
                        continue
                pipeline.flush()
                yield from self._poll()
                self._send_lost(time.monotonic())

    def _too_late(self, arrivals: Iterable[tuple[int, Any] | None]) -> Iterator[Result[Any]]:
        """Timeout Results for the calls the iterable still gives once the deadline passed."""
        problem = (f"the run's deadline of {self.deadline}s passed before this call was sent; "
                   "raise deadline= or add workers")
        for arrival in arrivals:
            if arrival is not None:
                index, call = arrival
                yield Result(index, call_target(call), error=errors.Timeout(problem))

    def _send(self, task_id: str, sent: _Sent, producer: Any = None) -> None:
        assert sent.payload is not None
        sent.seq, self.seq = self.seq, self.seq + 1
        self.pending[task_id] = sent
        self.unstarted.append((sent.seq, task_id))
        self.task.apply_async(sent.payload, task_id=task_id, producer=producer)

    def receive(self) -> Iterator[Result[Any]]:
        """The Results as they are stored; Timeout errors for those out when the deadline passes.

        One ``MGET`` of the pending keys per poll: cheap, and no per-result subscription or
        ``AsyncResult`` object to clean up.
        """
        end = self.end
        while self.pending:
            yield from self._poll()
            if not self.pending:
                return
            now = time.monotonic()
            if end is not None and now >= end:
                break
            self._send_lost(now)
            wake = self.next_poll if end is None else min(self.next_poll, end)
            time.sleep(max(0.0, wake - now))
        late = sorted((sent.index, sent.target) for sent in self.pending.values())
        self.cancel()
        problem = (f"the run's deadline of {self.deadline}s passed before this call finished; "
                   "raise deadline= or add workers")
        for index, target in late:
            yield Result(index, target, error=errors.Timeout(problem))

    def _poll(self) -> Iterator[Result[Any]]:
        """The Results stored since the last poll; notes the calls workers have started.

        Polls every ``_POLL_S``, or less often when the batch is so large that one poll takes a
        while: at most a fifth of the dispatcher's time goes to polling.
        """
        started = time.monotonic()
        task_ids = list(self.pending)
        stored = self.backend.mget([self.backend.get_key_for_task(key) for key in task_ids])
        self.next_poll = started + max(_POLL_S, 5 * (time.monotonic() - started))
        for task_id, value in zip(task_ids, stored, strict=True):
            if value is None:
                continue
            meta = self.backend.decode_result(value)
            sent = self.pending[task_id]
            if sent.seq > self.frontier:
                self.frontier = sent.seq
                self.advances.append((time.monotonic(), sent.seq))
            if meta["status"] in celery.states.READY_STATES:
                del self.pending[task_id]
                yield _decoded(sent.index, sent.target, sent.output, meta)
            else:  # STARTED: reserved by a worker, which the broker redelivers if it dies
                sent.payload = None

    def _send_lost(self, now: float) -> None:
        """Send again the calls overtaken (in the queue's order) ``grace`` seconds ago or more."""
        advances, cutoff = self.advances, now - self.grace
        while len(advances) > 1 and advances[1][0] <= cutoff:
            advances.popleft()
        if not advances or advances[0][0] > cutoff:
            return
        overtaken = advances[0][1]
        while self.unstarted and self.unstarted[0][0] < overtaken:
            seq, task_id = self.unstarted.popleft()
            sent = self.pending.get(task_id)
            if sent is None or sent.seq != seq or sent.payload is None:
                continue  # finished, sent again since, or started
            log.warning("call %d (%s) was taken from the queue by a worker that is gone or stuck, "
                        "not started after %.0f s: sending it again", sent.index, task_id,
                        self.grace, extra={"event": "celery.call_resent", "index": sent.index,
                                           "task_id": task_id, "grace_s": self.grace})
            self._send(task_id, sent)

    def cancel(self) -> None:
        """Revoke the calls not finished, so workers skip those still queued.

        Workers remember revoked ids; a later run of the same ``batch_id`` sends new ones (see
        :mod:`greenagents.celery.task`), so it runs what this one revoked.
        """
        if self.pending:
            self.app.control.revoke(list(self.pending))
            self.pending.clear()


class _Unpipelined(contextlib.AbstractContextManager["_Unpipelined"]):
    """What :func:`_pipelined` gives where kombu cannot batch: every publish goes at once."""

    def __exit__(self, *exc_info: object) -> None:
        return None

    def flush(self) -> None:
        pass


def _pipelined(producer: Any) -> Any:
    """Publishes sent to Redis in pipelines of ``_PIPELINE`` (kombu >= 5.7), not one by one;
    ``flush()`` sends what waits."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=_PIPELINE) if batch is not None else _Unpipelined()


def _arrivals(calls: Iterable[Any], wait: Callable[[], float]) -> Iterator[tuple[int, Any] | None]:
    """``enumerate(calls)``, with None whenever nothing came within ``wait()`` seconds.

    A sequence is read in place. Any other iterable, in a patched process, is read by a greenlet
    of its own, so that waiting for its next call (a pipe, a queue) leaves the caller free to
    flush what it sent and collect Results meanwhile.
    """
    if isinstance(calls, Sized) or not available():
        yield from enumerate(calls)
        return
    inbox: gevent.queue.Queue[Any] = gevent.queue.Queue(maxsize=_PIPELINE)

    def feed() -> None:
        try:
            for arrival in enumerate(calls):
                inbox.put(arrival)
            inbox.put(_FED_ALL)
        except gevent.GreenletExit:
            pass  # the caller stopped
        except BaseException as exc:  # re-raised in the caller
            inbox.put(_FeedFailed(exc))

    feeder = gevent.spawn(contextvars.copy_context().run, feed)
    try:
        while True:
            try:
                arrival = inbox.get(timeout=max(0.0, wait()))
            except gevent.queue.Empty:
                yield None
                continue
            if arrival is _FED_ALL:
                return
            if isinstance(arrival, _FeedFailed):
                raise arrival.error
            yield arrival
    finally:
        feeder.kill(block=False)


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
    run = _Dispatch(app, batch_id or uuid.uuid4().hex, timeout, deadline)
    enabled = settings().progress if progress is None else progress
    size = len(calls) if isinstance(calls, Sized) else None
    with Progress(size, enabled=enabled) as bar:
        try:
            for result in itertools.chain(run.send(calls), run.receive()):
                bar.add(result)
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
