"""``batch`` and ``stream`` through Celery: the calls of :func:`greenagents.batch`, on many workers.

Calls travel in chunks, one ``greenagents.call_many`` message each (sized by
:mod:`~greenagents.celery.chunks`); every call carries its idempotency key,
``"<batch_id>:<index>"``, under which its worker stores its Result (a message's task id is
``"<batch_id>:<first index>:<run>"``). Results are read back from the result backend as they
land (one Redis ``MGET`` of the pending keys per poll), decoded into the same
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
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import celery
import celery.states
from pydantic import TypeAdapter

from greenagents import errors
from greenagents.agent import Agent
from greenagents.backends import EMPTY, GreenBackend
from greenagents.celery import chunks, wire
from greenagents.celery.store import ResultStore
from greenagents.celery.task import install, reference
from greenagents.config import settings
from greenagents.feeder import FED_ALL, Feeder, FeedFailed, unpack_call
from greenagents.patching import available
from greenagents.progress import Progress
from greenagents.result import Result, call_target, target_name
from greenagents.runtime import Call

__all__ = ["batch", "stream"]

_POLL_S = 0.1  # how often pending results are fetched
_PIPELINE = 200  # messages sent to Redis in one round trip

log = logging.getLogger("greenagents.celery")


def _output(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """How to validate a value back into what ``fn`` returns: an agent's ``output`` type."""
    return TypeAdapter(fn.output) if isinstance(fn, type) and issubclass(fn, Agent) else None


@dataclass
class _Sent:
    """A call on its way: what its Result needs back (its index, its target, its output type)."""

    index: int
    target: str
    output: TypeAdapter[Any] | None


@dataclass
class _Chunk:
    """One message on its way: its calls, and what to send again if it is lost."""

    task_id: str
    name: bytes  # its result backend key
    first: int  # the input index of its first call
    payload: list[Any] | None  # dropped once a worker started it: from then on, it is safe
    calls: dict[str, _Sent]  # its calls not finished yet, by their key ("batch_id:index")
    seq: int = -1  # its place in the queue's order, renewed when sent again


class _Dispatch:
    """One batch on Celery: the calls sent in chunks, their Results read back, and the lost
    messages sent again.

    **Lost messages.** Celery's Redis transport takes a message off the queue (``BRPOP``) and only
    then records it as unacknowledged; a worker killed between the two, or before it read the
    reply waiting in its socket, takes the message with it: no ``visibility_timeout`` brings it
    back (celery/celery#4354, celery/kombu#305). The dispatcher sees such a loss: workers report
    each message they start (``track_started``), the queue hands out messages in the order they
    were sent, so one still not started once messages sent after it have been started for
    ``visibility_timeout`` seconds is lost (or stuck in a worker that long, where the broker would
    hand it out again too). It is sent again under the same task id; if it was only late after
    all, each call's stored Result answers the second copy.
    """

    def __init__(self, app: celery.Celery, batch_id: str, timeout: float | None,
                 deadline: float | None, chunk_size: int):
        self.app, self.task, self.batch_id, self.timeout = app, install(app), batch_id, timeout
        self.chunk_size = chunk_size
        self.run = uuid.uuid4().hex[:8]  # task ids are new each run; keys stay "batch:index"
        self.deadline = deadline
        self.end = None if deadline is None else time.monotonic() + deadline
        self.backend = app.backend
        self.store = ResultStore(app.backend)
        self.inbox = f"greenagents-inbox-{batch_id}:{self.run}"  # where workers announce Results
        self.grace = float(app.conf.broker_transport_options.get("visibility_timeout", 3600))
        self.chunks: dict[str, _Chunk] = {}  # by task id, while some of their calls are pending
        self.waiting: dict[str, _Chunk] = {}  # each pending call's chunk, by the call's key
        self.unstarted: deque[tuple[int, str]] = deque()  # (seq, task id), in the order sent
        self.seq = 0
        self.frontier = -1  # the latest seq seen started or finished
        self.advances: deque[tuple[float, int]] = deque()  # (when, frontier) as it moved on
        self.next_poll = time.monotonic() + _POLL_S  # the next look at the stored Results

    def send(self, calls: Iterable[Any]) -> Iterator[Result[Any]]:
        """Send every call; yield a Result for each one that cannot be sent, and those finished
        already: in a long batch the first Results come while the last calls are being sent,
        and from a slow iterable (a pipe) while it has not given its next call yet. A chunk goes
        when full, and whenever the dispatcher stops to look at the Results."""
        outputs: dict[Any, TypeAdapter[Any] | None] = {}
        chunk: list[tuple[str, list[Any], _Sent]] = []
        arrivals = _arrivals(calls, lambda: self.next_poll - time.monotonic())
        with self.app.producer_or_acquire() as producer, _pipelined(producer) as pipeline:
            for arrival in arrivals:
                if arrival is not None:
                    index, call = arrival
                    if self.end is not None and time.monotonic() >= self.end:
                        yield from self._too_late([sent for *_, sent in chunk],
                                                  itertools.chain([arrival], arrivals))
                        return
                    try:
                        fn, args, kwargs = unpack_call(index, call)
                        ref = reference(fn)
                    except errors.InputError as exc:
                        yield Result(index, "", error=exc)
                        continue
                    if fn not in outputs:
                        outputs[fn] = _output(fn)
                    key = f"{self.batch_id}:{index}"
                    entry = [ref, wire.plain(args), wire.plain(kwargs), index, key]
                    chunk.append((key, entry, _Sent(index, target_name(fn), outputs[fn])))
                    if len(chunk) >= self.chunk_size:
                        self._send_chunk(chunk, producer)
                        chunk = []
                    if time.monotonic() < self.next_poll:
                        continue
                self._send_chunk(chunk, producer)
                chunk = []
                pipeline.flush()
                yield from self._poll()
                self._send_lost(time.monotonic())
            self._send_chunk(chunk, producer)

    def _too_late(self, unsent: list[_Sent],
                  arrivals: Iterable[tuple[int, Any] | None]) -> Iterator[Result[Any]]:
        """Timeout Results for the calls not sent (``unsent``, and those the iterable still
        gives) once the deadline passed."""
        problem = (f"the run's deadline of {self.deadline}s passed before this call was sent; "
                   "raise deadline= or add workers")
        for sent in unsent:
            yield Result(sent.index, sent.target, error=errors.Timeout(problem))
        for arrival in arrivals:
            if arrival is not None:
                index, call = arrival
                yield Result(index, call_target(call), error=errors.Timeout(problem))

    def _send_chunk(self, calls: list[tuple[str, list[Any], _Sent]], producer: Any) -> None:
        if not calls:
            return
        first = calls[0][2].index
        task_id = f"{self.batch_id}:{first}:{self.run}"
        chunk = _Chunk(task_id, self.backend.get_key_for_task(task_id), first,
                       [[entry for _, entry, _ in calls], self.timeout, self.inbox],
                       {key: sent for key, _, sent in calls})
        self.chunks[chunk.task_id] = chunk
        self.waiting.update(dict.fromkeys(chunk.calls, chunk))
        self._publish(chunk, producer)

    def _publish(self, chunk: _Chunk, producer: Any = None) -> None:
        assert chunk.payload is not None
        chunk.seq, self.seq = self.seq, self.seq + 1
        self.unstarted.append((chunk.seq, chunk.task_id))
        self.task.apply_async(chunk.payload, task_id=chunk.task_id, producer=producer)

    def receive(self) -> Iterator[Result[Any]]:
        """The Results as they are stored; Timeout errors for those out when the deadline passes.

        One ``MGET`` of the pending keys per poll: cheap, and no per-result subscription or
        ``AsyncResult`` object to clean up.
        """
        end = self.end
        while self.chunks:
            yield from self._poll()
            if not self.chunks:
                return
            now = time.monotonic()
            if end is not None and now >= end:
                break
            self._send_lost(now)
            wake = self.next_poll if end is None else min(self.next_poll, end)
            time.sleep(max(0.0, wake - now))
        late = sorted((sent.index, sent.target) for chunk in self.chunks.values()
                      for sent in chunk.calls.values())
        self.cancel()
        problem = (f"the run's deadline of {self.deadline}s passed before this call finished; "
                   "raise deadline= or add workers")
        for index, target in late:
            yield Result(index, target, error=errors.Timeout(problem))

    def _poll(self) -> Iterator[Result[Any]]:
        """The Results stored since the last poll; notes the messages workers have started.

        Two round trips: an ``MGET`` of the pending messages' task ids (which say who started),
        then the Results workers announced on the run's inbox since the last poll (see
        :mod:`~greenagents.celery.store`). Every ``_POLL_S``, or less often when the batch is so
        large that one poll takes a while: at most a fifth of the dispatcher's time goes to
        polling.
        """
        started = time.monotonic()
        chunks = list(self.chunks.values())
        for chunk, value in zip(chunks, self.backend.mget([c.name for c in chunks]), strict=True):
            if value is None:
                continue
            self._started(chunk)  # STARTED: reserved by a worker, which the broker redelivers
            meta = self.backend.decode_result(value)
            if meta["status"] in celery.states.READY_STATES - {celery.states.SUCCESS}:
                yield from self._failed(chunk, meta)
        finished = self.store.collect(self.inbox, self._stored_keys)
        self.next_poll = started + max(_POLL_S, 5 * (time.monotonic() - started))
        for key, data in finished:
            owner = self.waiting.get(key)
            if owner is None:
                continue  # announced twice: its message ran twice (sent again, or redelivered)
            self._started(owner)
            yield wire.from_json(data, self._finished(owner, key).output)

    def _stored_keys(self) -> list[str]:
        """The keys of the calls whose Result may be stored: those of started messages."""
        return [key for chunk in self.chunks.values() if chunk.payload is None
                for key in chunk.calls]

    def _started(self, chunk: _Chunk) -> None:
        chunk.payload = None
        if chunk.seq > self.frontier:
            self.frontier = chunk.seq
            self.advances.append((time.monotonic(), chunk.seq))

    def _finished(self, chunk: _Chunk, key: str) -> _Sent:
        sent = chunk.calls.pop(key)
        del self.waiting[key]
        if not chunk.calls:
            del self.chunks[chunk.task_id]
        return sent

    def _failed(self, chunk: _Chunk, meta: dict[str, Any]) -> Iterator[Result[Any]]:
        """Celery's own failure of a whole message (revoked, say): its calls' error. (The task
        never raises for a call's own failure: that is stored as the call's Result.)"""
        error = meta["result"]
        for key in list(chunk.calls):
            sent = self._finished(chunk, key)
            failure = error if isinstance(error, BaseException) else errors.GreenAgentsError(
                f"Celery reported {meta['status']}: {error}")
            yield Result(sent.index, sent.target, error=failure)

    def _send_lost(self, now: float) -> None:
        """Send again the messages overtaken (in the queue's order) ``grace`` seconds ago or more."""
        advances, cutoff = self.advances, now - self.grace
        while len(advances) > 1 and advances[1][0] <= cutoff:
            advances.popleft()
        if not advances or advances[0][0] > cutoff:
            return
        overtaken = advances[0][1]
        while self.unstarted and self.unstarted[0][0] < overtaken:
            seq, task_id = self.unstarted.popleft()
            chunk = self.chunks.get(task_id)
            if chunk is None or chunk.seq != seq or chunk.payload is None:
                continue  # finished, sent again since, or started
            waiting = len(chunk.calls)
            more = f"and {waiting - 1} more in its message " if waiting > 1 else ""
            log.warning("call %d %s(%s) was taken from the queue by a worker that is gone or "
                        "stuck, not started after %.0f s: sending it again", chunk.first, more,
                        task_id, self.grace, extra={"event": "celery.call_resent",
                                                    "index": chunk.first, "task_id": task_id,
                                                    "grace_s": self.grace})
            self._publish(chunk)

    def cancel(self) -> None:
        """Revoke the messages not finished, so workers skip those still queued, and drop the
        run's inbox.

        Workers remember revoked ids; a later run of the same ``batch_id`` sends new ones (see
        :mod:`greenagents.celery.task`), so it runs what this one revoked.
        """
        if self.chunks:
            self.app.control.revoke(list(self.chunks))
        self.chunks.clear()
        self.waiting.clear()
        self.store.discard(self.inbox)


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

    A sequence is read in place. Any other iterable, in a patched process, is read by a
    :class:`~greenagents.feeder.Feeder` (a greenlet of its own), so that waiting for its next
    call (a pipe, a queue) leaves the caller free to flush what it sent and collect Results.
    """
    if isinstance(calls, Sized) or not available():
        yield from enumerate(calls)
        return
    backend = GreenBackend()
    events = backend.queue()
    feeder = Feeder(enumerate(calls), backend, events, window=_PIPELINE)
    try:
        while True:
            event = backend.get(events, max(0.0, wait()))
            if event is EMPTY:
                yield None
            elif event is FED_ALL:
                return
            elif isinstance(event, FeedFailed):
                raise event.error
            else:
                feeder.taken()
                yield event.index, event.call
    finally:
        feeder.stop()


def stream(app: celery.Celery, calls: Iterable[Call], *, timeout: float | None = None,
           deadline: float | None = None, progress: bool | None = None,
           batch_id: str | None = None, chunk_size: int | None = None) -> Iterator[Result[Any]]:
    """Run ``calls`` on the app's Celery workers; yield each :class:`Result` as it completes.

    Like :func:`greenagents.stream`, but every call is sent at once (Redis holds the queue) and
    workers run them. Calls travel ``chunk_size`` to a message (default: sized to the batch and
    the workers' ``-c``, see :mod:`~greenagents.celery.chunks`); a worker runs up to ``-c``
    messages at once, the calls of each at once. ``timeout`` bounds each call (on its worker);
    ``deadline`` the whole run: calls unfinished then get a ``Timeout`` error and are revoked.
    ``batch_id`` (default: random) names the batch: reuse it to collect a batch again without
    recomputing what finished. Targets must be importable by the workers (``module:Name``).

    >>> results = stream(app, [(SentimentAgent, {"text": "hi"})])    # doctest: +SKIP
    """
    size = len(calls) if isinstance(calls, Sized) else None
    chunk = chunks.check(chunk_size)
    if chunk is None:
        slots = chunks.worker_slots(app) if size is not None and size > chunks.PER_WORKER else []
        chunk = chunks.size_for(size, slots)
    run = _Dispatch(app, batch_id or uuid.uuid4().hex, timeout, deadline, chunk)
    enabled = settings().progress if progress is None else progress
    with Progress(size, enabled=enabled) as bar:
        try:
            for result in itertools.chain(run.send(calls), run.receive()):
                bar.add(result)
                yield result
        finally:
            run.cancel()


def batch(app: celery.Celery, calls: Iterable[Call], *, timeout: float | None = None,
          deadline: float | None = None, progress: bool | None = None,
          batch_id: str | None = None, chunk_size: int | None = None) -> list[Result[Any]]:
    """Run ``calls`` on the app's Celery workers; one :class:`Result` per call, in input order.
    Options as in :func:`stream`.

    >>> [r.value for r in batch(app, [(divmod, (7, 2), {})])]      # doctest: +SKIP
    [[3, 1]]
    """
    results = list(stream(app, calls, timeout=timeout, deadline=deadline, progress=progress,
                          batch_id=batch_id, chunk_size=chunk_size))
    return sorted(results, key=lambda r: r.index or 0)
