"""Pacing streamed answers: one greenlet writes every stream's due events, in time order.

A streamed answer is one event per token, ``token_latency`` apart. Paced by a sleep in each
stream's own greenlet, every token cost a timer, a greenlet wake-up and the WSGI server's write
path before its one ``send`` — CPU that a benchmark's client then cannot have, where a real
provider spends its own servers'. Here one greenlet (the ticker) keeps every paced stream in a
heap by due time, wakes at most once per :data:`TICK_S` while it keeps up, and writes each due
stream's events straight to its socket with one non-blocking ``send``. A stream's own greenlet
sleeps through its answer and wakes only for what the ticker must not do: the first burst (the
HTTP headers go with it), the last (the request is accounted for before it goes out, or cut short
by a fault), and the rest of a write the socket would not take at once (a slow reader then gets
back-pressure, as from any write).

A due token is the ticker's hot path, run 50,000 times a second in the streaming benchmark: one
heap pop, the next write of a batch the stream made ahead (:data:`BATCH`), one framed
``os.write``, one heap push — no per-token objects beyond those, no lookups through gevent's
socket. Measured 2026-11-30 (``stream_ab.py ga 200 100 50``, medians of 3 alternating runs on
the shared 2-core machine at load 2-3): 27.0 → 24.0 µs of simulator CPU per token, 57.5 → 50.0
with 20-token answers (with :mod:`.request_headers`). Most of what is left is the ``send``
itself (~9-10 µs of loopback TCP per write here), the loop's wake-ups (tens of µs of CPU each on
this VM, up to one per :data:`TICK_S`) and pywsgi's handling of each request.

The schedule is the model's, not the writer's: event *k* is due ``k × per_token`` after the
first, so a simulator behind schedule sends a stream's overdue events in one write and catches
up, instead of slowing every stream down and blaming the client. The first token's moment
(``/_sim/first_tokens``) is taken as the write holding it is made: a client is late only after.

>>> stream = Stream([(b"head ", 0), (b"a ", 1), (b"b", 1), (b" end", 0)], 0.5, start=0.0)
>>> stream.burst(stream.take(0.0))  # the head is due at once, the first token half a second later
Burst(data=b'head ', first_token=False, final=False, overdue=False)
>>> stream.burst(stream.take(5.0))  # far behind: everything due goes out in one write
Burst(data=b'a b end', first_token=True, final=True, overdue=True)
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import gevent
from gevent.hub import Waiter, get_hub

from greenagents.testing.shapes import Event

#: The ticker wakes at most once per this many seconds, and writes everything due by then.
TICK_S = 0.001
#: A stream's writes are made this many at a time (see :meth:`Stream._peek`).
BATCH = 32

_heappop, _heappush = heapq.heappop, heapq.heappush


class Burst(NamedTuple):
    """What one write of a stream sends: the events due, joined."""

    data: bytes
    first_token: bool  # it holds the answer's first output token
    final: bool  # nothing follows (the answer's end)
    overdue: bool  # an event was due already when it was looked at: the simulator is behind


class Wire(Protocol):
    """The raw side of one HTTP response, for writes made outside the WSGI server's loop."""

    def write_now(self, data: bytes) -> bytes:
        """Frame ``data`` as the response's transfer encoding puts it on the wire and send what
        the socket takes at once (non-blocking); return the framed rest (``b""``: all sent)."""
        ...

    def send_rest(self, raw: bytes) -> None:
        """Send all of ``raw`` (already framed), waiting for room; raise ``OSError`` if the
        client is gone."""
        ...


class Stream:
    """One answer's events and where it stands: an event carrying *n* tokens is due
    ``n × per_token`` seconds after the one before it (the first after ``start``); an event
    carrying none goes with the one before it.

    :meth:`take` returns the events due; ``first_token``, ``final`` and ``overdue`` then say
    what they were (see :class:`Burst`).
    """

    __slots__ = ("_batch", "_bursts", "_next", "_per_token", "_taken", "due", "final",
                 "first_token", "headers_sent", "on_first", "overdue", "waiter", "wire")

    def __init__(self, events: Iterable[Event], per_token: float, *, start: float | None = None,
                 on_first: Callable[[], None] | None = None) -> None:
        self._bursts = _bursts(events)
        self._per_token = per_token
        self._batch: list[tuple[bytes, int]] = []  # the bursts made and not all taken yet
        self._next = 0  # the index in ``_batch`` of the burst due at ``due``
        self._taken = 0  # bursts taken, all told: the first token is in the second
        self.due = time.monotonic() if start is None else start
        self.on_first = on_first
        self.first_token = self.final = self.overdue = False
        # set while the stream is paced: whom the ticker wakes, how it writes (None: through
        # the server), and whether the response's headers are out (only then can it write raw)
        self.waiter: Waiter[Burst | bytes] | None = None
        self.wire: Wire | None = None
        self.headers_sent = False

    def take(self, now: float) -> bytes:
        """The events due by ``now`` (at least those due at ``due``), joined; the stream then
        waits for ``due``."""
        taken = self._taken
        due = self._peek()
        assert due is not None, "take() after the final burst"
        out = [due[0]]
        self._next += 1
        self.overdue = False
        while (burst := self._peek()) is not None:
            self.due += self._per_token * burst[1]
            if self.due > now:
                break
            self.overdue = True
            out.append(burst[0])
            self._next += 1
        else:
            self.final = True
        self._taken += len(out)
        self.first_token = taken <= 1 < self._taken
        return out[0] if len(out) == 1 else b"".join(out)

    def burst(self, data: bytes) -> Burst:
        """``data``, as just taken, with what it holds."""
        return Burst(data, self.first_token, self.final, self.overdue)

    def _peek(self) -> tuple[bytes, int] | None:
        """The burst due at ``due`` (None: the answer is all taken). Bursts are made
        :data:`BATCH` at a time: the answer's generator and its encoder run warm in the CPU's
        caches instead of once per due token among a thousand other streams', and a stream
        holds at most that many."""
        if self._next == len(self._batch):
            self._batch, self._next = list(itertools.islice(self._bursts, BATCH)), 0
            if not self._batch:
                return None
        return self._batch[self._next]


def _bursts(events: Iterable[Event]) -> Iterator[tuple[bytes, int]]:
    """The writes of an answer at pace, and the tokens each waits for: the events before the
    first token (none waits), then each event carrying tokens, with the events carrying none
    that follow it."""
    data, tokens = b"", 0
    for event, count in events:
        if count:
            yield data, tokens
            data, tokens = event, count
        else:
            data += event
    yield data, tokens


class Pacer:
    """Paces every stream of one server (one hub): see the module docstring.

    The ticker runs only while a stream is waiting for a due time, and ends when none is.
    """

    def __init__(self, tick: float = TICK_S) -> None:
        self.tick = tick
        self._heap: list[tuple[float, int, Stream]] = []
        self._order = itertools.count()  # ties in due time go in arrival order
        self._ticker: gevent.Greenlet[[], None] | None = None
        self._alarm: tuple[Any, Waiter[None]] | None = None  # the ticker's timer and waiter as it sleeps
        self._wake_at = float("inf")  # when the ticker means to wake; -inf while it works
        self._live = 0  # streams being paced

    def pace(self, stream: Stream, wire: Wire | None = None) -> Iterator[Burst]:
        """Yield the bursts the caller must send itself through its server, at their due time:
        the first, the last, and every one the ticker cannot write (``wire`` None, or the
        headers not out yet). Writes the others from the ticker. A burst with ``first_token``
        has been recorded (``on_first``) when it is yielded.
        """
        stream.wire = wire
        burst = stream.burst(stream.take(time.monotonic()))
        self._live += 1
        try:
            while True:
                if burst.overdue:  # behind: let other requests in before catching up
                    gevent.sleep(0)
                if burst.first_token and stream.on_first is not None:
                    stream.on_first()
                yield burst
                stream.headers_sent = stream.headers_sent or bool(burst.data)
                if burst.final:
                    return
                handed = self._wait(stream)
                while isinstance(handed, bytes):  # the rest of a write the socket did not take
                    assert wire is not None
                    wire.send_rest(handed)
                    handed = self._wait(stream)
                burst = handed
        finally:
            stream.waiter = None  # done or gone: the ticker drops it
            self._live -= 1
            if not self._live and self._ticker is not None:  # the server stops: do not linger
                self._heap.clear()
                self._wake_early()

    def _wait(self, stream: Stream) -> Burst | bytes:
        """Put ``stream`` in the heap and sleep until the ticker hands something back."""
        waiter: Waiter[Burst | bytes] = Waiter()
        stream.waiter = waiter
        _heappush(self._heap, (stream.due, next(self._order), stream))
        if self._ticker is None:
            self._ticker = gevent.spawn(self._tick)
        elif stream.due < self._wake_at:
            self._wake_early()
        handed: Burst | bytes = waiter.get()
        return handed

    def _tick(self) -> None:
        """The ticker: write what is due, sleep until the next due time; end when idle."""
        heap, monotonic = self._heap, time.monotonic
        try:
            while heap:
                self._wake_at = float("-inf")
                now = monotonic()
                while heap and heap[0][0] <= now:  # one pass; the overdue get the next one
                    stream = _heappop(heap)[2]
                    if stream.waiter is not None:
                        try:
                            self._step(stream, now)
                        except Exception as exc:  # its events failed: raised where the stream
                            self._hand_back(stream, exc)  # is served, as they were before
                if not heap:
                    break
                end = monotonic()
                if heap[0][0] <= end:  # behind: the next pass at once, the server's reads first
                    gevent.sleep(0)  # (sleeping out the tick would hand the CPU to others)
                    continue
                self._wake_at = max(heap[0][0], now + self.tick)
                self._sleep(self._wake_at - end)
        finally:
            self._ticker, self._wake_at = None, float("inf")

    def _step(self, stream: Stream, now: float) -> None:
        """Write ``stream``'s events due by ``now``, or hand them to its greenlet; reschedule it."""
        data = stream.take(now)
        wire = stream.wire
        if stream.final or wire is None or not stream.headers_sent:
            self._hand_back(stream, stream.burst(data))
            return
        if stream.first_token and stream.on_first is not None:
            stream.on_first()
        rest = wire.write_now(data)
        if rest:
            self._hand_back(stream, rest)
        else:
            _heappush(self._heap, (stream.due, next(self._order), stream))

    def _sleep(self, delay: float) -> None:
        """``gevent.sleep(delay)`` that :meth:`_wake_early` can cut short. (An Event's timed wait
        costs twice a sleep's CPU, and the ticker sleeps up to once per tick.)"""
        waiter: Waiter[None] = Waiter()
        timer = get_hub().loop.timer(delay)  # a libev (or libuv) watcher
        self._alarm = timer, waiter
        timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            timer.close()
            self._alarm = None

    def _wake_early(self) -> None:
        if self._alarm is not None and self._alarm[0].active:
            timer, waiter = self._alarm
            timer.stop()
            get_hub().loop.run_callback(waiter.switch, None)

    @staticmethod
    def _hand_back(stream: Stream, what: Burst | bytes | Exception) -> None:
        waiter, stream.waiter = stream.waiter, None
        if waiter is None:  # handed back already
            return
        if isinstance(what, Exception):
            get_hub().loop.run_callback(waiter.throw, what)
        else:
            get_hub().loop.run_callback(waiter.switch, what)
