"""An agent's answer as it is generated: :meth:`Agent.stream <greenagents.Agent.stream>`.

::

    stream = SummaryAgent.stream(text=doc)
    for delta in stream:           # str pieces of the answer, as the provider sends them
        send(delta)
    result = stream.result         # the whole Result: value, usage, cost, history

The request goes out when iteration starts (or :attr:`Stream.result` is read); each delta is read
from the socket only when the loop asks for the next one — no queue and no extra greenlet, so a
slow consumer slows only its own stream and a thousand streams cost a thousand greenlets' waits.

- **Retries.** Until the first delta reaches the caller, a failed attempt is retried (and fallback
  models tried) exactly as :meth:`Agent.call` does, the slot given up while waiting. After it,
  nothing is retried (the caller already has part of the answer): the stream raises the error and
  ``stream.result.error`` holds it — an answer is never silently cut short.
- **Time limits.** ``Agent.first_token_timeout`` bounds each attempt's wait for its first delta
  (default: ``timeout``); a ``Retry(deadline=...)`` bounds the whole call, every token included;
  ``timeout`` bounds each wait for data, as for any call.
- **Closing early.** Leaving the loop (``break``, an exception, a dropped client closing the
  response) closes the stream: the connection is closed, so the provider stops generating, and
  ``stream.result.error`` is a :class:`~greenagents.errors.StreamClosed`. Use ``with`` or
  :meth:`Stream.close` when you stop reading without leaving a ``for`` loop.
- **Structured output.** Deltas are the raw JSON text; ``stream.result.value`` is the validated
  model (an invalid answer is an :class:`~greenagents.errors.OutputError`: it is not re-asked,
  the caller has seen it). :meth:`Stream.partial` yields the JSON so far as a dict filling up.
- **Usage and cost** are recorded (tracking included) like any call's, also when the stream is cut
  short: then usage is what the provider reported so far, else the prompt as estimated and one
  completion token per delta received.
- **Tools.** An agent with ``tools`` runs its tool loop (:class:`greenagents.toolloop.Loop`), each
  turn read as it streams: a turn asking for tools is read whole (and retried as a call's turn
  is), its tools run, and the next turn is asked for; text the model writes in any turn reaches
  the caller as it arrives, and :meth:`Stream.events` adds a :class:`ToolStarted` per tool call
  as its turn ends and a :class:`ToolFinished` as each call ends. ``result.value`` is the last
  turn's answer.
- **Like any call.** A stream emits the hooks' events (so OpenTelemetry spans, Prometheus metrics
  and your listeners see it: an attempt's span lasts until its last delta), spends from the
  active budgets (an attempt that could pass one is not sent: ``BudgetExceeded``), and, for an
  agent whose answers are cached, a hit is replayed — the answer as one delta, then the Result,
  ``cached=True`` — while a stream read to a valid end is stored. The hooks run in a copy of the
  caller's context taken when the stream is made, never in the loop reading it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import gevent
from gevent.event import Event
from gevent.queue import Queue
from greenlet import getcurrent
from pydantic_core import from_json

from . import hooks, tracking
from . import state as clients
from .cache import Entry, Lease, lease
from .errors import StreamClosed, scrub
from .providers import Endpoint, ToolRequest
from .result import Result, ToolCall, Usage
from .retry import Policy
from .streamturn import CallState, StreamedTurn
from .toolloop import Loop

__all__ = ["Done", "Stream", "StreamEvent", "TextDelta", "ToolFinished", "ToolStarted"]

T = TypeVar("T")


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer's text (for structured output, of its JSON); ``turn`` is the model
    turn it belongs to (1 unless the agent has tools)."""

    text: str
    turn: int = 1


@dataclass(frozen=True)
class ToolStarted:
    """The model asked for a tool call in ``turn``; the turn's calls run once it ends."""

    id: str
    name: str
    arguments: str | Mapping[str, Any]
    turn: int


@dataclass(frozen=True)
class ToolFinished:
    """A tool call ran, told as it ends (a turn's quick tools before its slow ones): ``output``
    (what the model is sent) or ``error``, as in ``Result.history``'s
    :class:`~greenagents.ToolCall` (keys masked, cut to 2,000 characters)."""

    id: str
    call: ToolCall


@dataclass(frozen=True)
class Done:
    """The stream ended; ``result`` is the call's whole :class:`~greenagents.Result`."""

    result: Result[Any]


StreamEvent = TextDelta | ToolStarted | ToolFinished | Done


class Stream(Generic[T]):
    """One streamed agent call. Iterate it for ``str`` deltas; read :attr:`result` once done.

    Made by :meth:`Agent.stream <greenagents.Agent.stream>`; a stream is read once.
    """

    def __init__(self, agent: type, result: Result[T], inputs: Mapping[str, Any],
                 state: CallState | None = None, endpoints: Sequence[tuple[str, Endpoint]] = (),
                 policy: Policy | None = None, loop: Loop | None = None) -> None:
        self._agent, self._result, self._inputs, self._state = agent, result, inputs, state
        self._endpoints, self._policy, self._loop = endpoints, policy, loop
        self._context = contextvars.copy_context()  # the caller's, for hooks, budgets, spans
        # and its client, pinned: a stream is read where its caller likes (a WSGI server
        # iterating a response after the handler returned), with the client it was made under
        self._context.run(clients.enter, clients.current())
        self._call: hooks.CallInfo | None = None
        self._lease: Lease | None = None
        self._turn: StreamedTurn | None = None
        self._in_turn = False  # a tool loop's turn begun and not ended
        self._began = time.perf_counter()
        self._parts: list[str] = []
        self._turn_from = 0  # where the current turn's text starts in _parts
        self._answer = ""  # the last turn's text: the answer
        self._finished = state is None  # an input or config error: the Result is ready
        self._started = False
        self._inside: Any = None  # the greenlet reading, while it is in the stream's own code
        self._reader: Any = None  # the greenlet that started reading
        self._settled: Event | None = None  # set once finished, for a close() or a result read
        # from another greenlet than the reader
        if self._finished:
            self._context.run(self._report)

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    @property
    def result(self) -> Result[T]:
        """The call's :class:`~greenagents.Result`, always a finished one.

        Not read yet: reads the whole stream first. Being read by another greenlet's loop: waits
        until that loop ends, as a gevent ``Event`` would (so a greenlet watching a stream it
        does not read gets the whole Result, never one half filled in). Read inside the loop
        reading the stream, it raises ``RuntimeError``: the Result exists once the loop ends,
        and :attr:`text` holds the text so far.
        """
        if self._finished:
            return self._result
        if not self._started:
            try:
                for _ in self._run():
                    pass
            except Exception:  # it is on the Result
                pass
        elif self._reader is getcurrent():
            raise RuntimeError(f"{self._result.target}: stream.result was read inside the loop "
                               "reading the stream; it is ready once the loop ends (stream.text "
                               "is the text so far)")
        else:
            self._settled_event().wait()
        return self._result

    def __iter__(self) -> Iterator[str]:
        items = self._run()
        if self._loop is None:  # no tools, no tool events: every item is text (a layer fewer)
            return items  # type: ignore[return-value]
        return (item for item in items if type(item) is str)

    def events(self) -> Iterator[StreamEvent]:
        """The stream as typed events: :class:`TextDelta` each (and, for an agent with tools,
        :class:`ToolStarted` / :class:`ToolFinished` per tool call), then :class:`Done`."""
        for item in self._run():
            yield TextDelta(item, self._turn_number) if type(item) is str else item  # type: ignore[misc]
        yield Done(self._result)

    def partial(self) -> Iterator[Any]:
        """For structured output: after each delta, the JSON received so far, parsed leniently
        (pydantic-core's partial mode: an unfinished string or list is kept, an unfinished key
        dropped) — a dict filling up, not a validated model; that is ``result.value``.

        >>> import pydantic_core
        >>> pydantic_core.from_json('{"label": "posi', allow_partial="trailing-strings")
        {'label': 'posi'}
        """
        for _ in self:
            try:
                yield from_json("".join(self._parts[self._turn_from:]),
                                allow_partial="trailing-strings")
            except ValueError:  # nothing parseable yet (e.g. whitespace only)
                continue

    def close(self) -> None:
        """Stop reading: the connection is closed (the provider stops generating) and the Result
        holds a :class:`~greenagents.errors.StreamClosed`. Does nothing once the stream ended.

        From another greenlet than the reading one (a server noticing its client left), it also
        interrupts the reader wherever the stream has it wait — sending the request, backing
        off before a retry, reading a delta, running tools: the reader's loop raises the
        ``StreamClosed``, and ``close()`` returns once the Result is settled.
        """
        if self._finished:
            return
        closed = StreamClosed(f"{self._result.target}: the stream was closed after "
                              f"{len(self._parts)} deltas, before the answer's end (its text so "
                              "far is stream.text)")
        reader = self._inside
        if reader is None or reader is getcurrent():
            self._context.run(self._finish, closed)
            return
        settled = self._settled_event()
        gevent.get_hub().loop.run_callback(self._interrupt, reader, closed)
        settled.wait()

    def _settled_event(self) -> Event:
        """The event set once the Result is settled (made on first need: most streams are read
        and settled by one greenlet and never need one)."""
        if self._settled is None:
            self._settled = Event()
        return self._settled

    def _interrupt(self, reader: Any, closed: StreamClosed) -> None:
        """Raise ``closed`` in the reading greenlet where it waits, which then settles the Result
        in its own context (entered there: it cannot be entered here); run from the hub."""
        if self._finished:
            return
        if self._inside is reader:
            reader.throw(closed)
        else:  # it went back to its loop meanwhile: settled here, as from the loop itself
            gevent.spawn(self._context.run, self._finish, closed)

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def _turn_number(self) -> int:
        return self._loop.turn if self._loop is not None else 1

    def _run(self) -> Iterator[str | ToolStarted | ToolFinished]:
        """:meth:`_read`, noting which greenlet is in the stream's code between two items (for a
        :meth:`close` from another greenlet)."""
        items, me = self._read(), getcurrent()
        try:
            while True:
                self._inside = me
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    self._inside = None
                yield item
        finally:
            items.close()

    def _read(self) -> Generator[str | ToolStarted | ToolFinished, None, None]:
        """The call, read as it arrives: each text delta (a str), and the tool events. Every step
        that emits hooks runs in the stream's context; the socket reads run in the caller's."""
        if self._finished:
            if self._result.error is not None:
                raise self._result.error
            return
        if self._started:
            raise RuntimeError(f"{self._result.target}: this stream is already being read; a "
                               "stream is read once, by one loop")
        self._started, self._reader = True, getcurrent()
        run, parts = self._context.run, self._parts
        try:
            hit = run(self._begin)
            if hit is not None:  # from the cache: the whole answer at once
                parts.append(hit.text)
                yield hit.text
            else:
                while True:
                    turn = run(self._open_turn)
                    self._turn_from = len(parts)
                    for text in turn.deltas():  # one socket read per delta, no queue
                        parts.append(text)
                        yield text
                    calls = run(self._end_turn)
                    if calls is None:
                        break
                    if calls:
                        yield from self._tools(calls)
                    run(self._end_loop_turn)
            run(self._finish)
        except Exception as exc:
            run(self._finish, exc)
            if self._result.error is exc:
                raise
            raise self._result.error from None  # type: ignore[misc]  # the scrubbed copy
        finally:
            if not self._finished:  # left early: a break, the caller's kill or timeout
                self.close()

    def _tools(self, calls: Sequence[ToolRequest]) -> Iterator[ToolStarted | ToolFinished]:
        """Run the turn's tool calls in a greenlet of their own, yielding a ToolFinished as each
        one ends (the reader waits for them here, so a close() interrupts the wait)."""
        loop = self._loop
        assert loop is not None
        for call in calls:
            yield ToolStarted(call.id, call.name, call.arguments, loop.turn)
        ended: Queue[ToolFinished | None] = Queue()

        def run_calls() -> Exception | None:
            try:
                loop.run_calls(calls, lambda call, record: ended.put(ToolFinished(call.id, record)))
            except Exception as exc:  # raised in the reader, below (not logged as a crash)
                return exc
            return None

        runner = gevent.spawn(self._context.copy().run, run_calls)  # the stream's context
        runner.link(lambda _: ended.put(None))
        try:
            while (event := ended.get()) is not None:
                yield event
        finally:
            runner.kill()  # left early (closed, killed): the turn's tools end with it
        if runner.value is not None:
            raise runner.value

    def _begin(self) -> Entry | None:
        """Open the call for the hooks; look it up in the cache (waiting for an identical call in
        flight): its answer, or None to ask the model."""
        assert self._state is not None
        state = self._state
        if hooks.active:
            self._call = hooks.call_opened(self._result.target, self._agent, agent=True)
        self._lease = lease(self._agent, state.messages, self._endpoints, state.spec.schema,
                            state.tools)
        return self._lease.hit

    def _open_turn(self) -> StreamedTurn:
        assert self._state is not None and self._policy is not None
        if self._loop is not None:
            self._loop.begin()
            self._in_turn = True
        self._turn = StreamedTurn(self._state, self._endpoints, self._policy)
        self._turn.open()
        return self._turn

    def _end_turn(self) -> Sequence[ToolRequest] | None:
        """The turn's stream ended: the tool calls to run (the loop goes on), else None."""
        assert self._turn is not None
        ended = self._turn.end()
        assert ended is not None
        completion, goes_on = ended
        if self._loop is None or not goes_on:
            self._answer = completion.text
            return None
        return self._loop.calls_for(completion)

    def _end_loop_turn(self) -> None:
        assert self._loop is not None
        self._in_turn = False
        self._loop.end()

    def _finish(self, error: BaseException | None = None) -> None:
        """Fill in and report the Result, once: value (validated) or error, usage, cost; the
        cache, the hooks and the execution log are told."""
        if self._finished:
            return
        self._finished = True
        assert self._state is not None
        result, state = self._result, self._state
        if self._turn is not None:
            self._turn.end(error)  # cut short: the connection is closed, the usage counted
        hit = self._lease.hit if self._lease is not None else None
        if error is None:
            try:
                result.value = state.spec.parse(hit.text if hit is not None else self._answer)
            except Exception as exc:  # an invalid structured answer: not re-asked
                error = exc
        if self._in_turn and self._loop is not None:
            self._in_turn = False
            self._loop.end(error)
        if hit is not None:
            result.cached, result.model = True, hit.model
            result.usage, result.cost_usd = Usage(hit.prompt_tokens, hit.completion_tokens), 0.0
        else:
            result.model = state.model
            result.usage, result.cost_usd = state.usage, state.cost(state.model or "")
        if error is not None:
            result.error = scrub(error, *(endpoint.api_key for _, endpoint in self._endpoints))
            result.value = None
        if self._lease is not None:  # stored and shared if it answered; else the identical
            usage = result.usage or Usage()  # calls waiting for it ask for themselves
            self._lease.settle(None if error is not None or hit is not None else Entry(
                self._answer, result.model or "", usage.prompt_tokens, usage.completion_tokens,
                result.cost_usd))
        result.attempts = state.attempts
        result.history = tuple(state.history)
        result.duration_s = time.perf_counter() - self._began
        try:
            self._report()
        finally:
            if self._settled is not None:
                self._settled.set()

    def _report(self) -> None:
        if hooks.active and self._call is None:  # an input error: the call opens to end at once
            self._call = hooks.call_opened(self._result.target, self._agent, agent=True)
        hooks.call_closed(self._call, self._result)
        tracking.record(self._result, self._inputs)
