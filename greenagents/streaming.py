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
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic_core import from_json

from . import limits, tracking
from .config import settings
from .errors import QuotaExceeded, RateLimited, StreamClosed
from .errors import Timeout as CallTimeout
from .providers import Endpoint
from .providers.streams import TextStream, open_stream
from .result import Attempt, Result, ToolCall, Usage
from .retry import Policy, call_with_retries, retryable
from .state import current as current_client
from .state import using
from .structured import OutputSpec

__all__ = ["Done", "Stream", "StreamEvent", "TextDelta"]

T = TypeVar("T")
R = TypeVar("R")


def _with_owner(method: Callable[..., R]) -> Callable[..., R]:
    """Run a Stream's method with the client it was made under active: a stream is read where
    its caller likes (a WSGI server iterating a response, after the handler returned)."""
    @functools.wraps(method)
    def run(self: Stream[Any], *args: Any, **kwargs: Any) -> R:
        with using(self._owner):
            return method(self, *args, **kwargs)
    return run


class CallState(Protocol):
    """What a stream shares with :meth:`Agent.call`'s bookkeeping (``agent._Call``)."""

    agent: Any
    messages: list[dict[str, Any]]
    spec: OutputSpec
    usage_by_model: dict[str, Usage]
    history: list[Attempt | ToolCall]
    started: float

    @property
    def usage(self) -> Usage: ...
    @property
    def attempts(self) -> int: ...
    def cost(self, model: str) -> float | None: ...
    def waited(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer's text (for structured output, of its JSON)."""

    text: str


@dataclass(frozen=True)
class Done:
    """The stream ended; ``result`` is the call's whole :class:`~greenagents.Result`."""

    result: Result[Any]


StreamEvent = TextDelta | Done


class Stream(Generic[T]):
    """One streamed agent call. Iterate it for ``str`` deltas; read :attr:`result` once done.

    Made by :meth:`Agent.stream <greenagents.Agent.stream>`; a stream is read once.
    """

    def __init__(self, result: Result[T], inputs: Mapping[str, Any], state: CallState | None,
                 endpoints: Sequence[tuple[str, Endpoint]], policy: Policy | None) -> None:
        self._result, self._inputs, self._state = result, inputs, state
        self._endpoints, self._policy = endpoints, policy
        self._owner = current_client()  # the client this stream belongs to
        self._body: TextStream | None = None
        self._deltas: Iterator[str] = iter(())
        self._model = ""
        self._began = time.perf_counter()
        self._parts: list[str] = []
        self._finished = state is None  # an input or config error: the Result is ready
        self._started = False
        if self._finished:
            tracking.record(result, inputs)

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    @property
    def result(self) -> Result[T]:
        """The call's :class:`~greenagents.Result`; reads the rest of the stream first if needed."""
        if not self._finished:
            try:
                for _ in self:
                    pass
            except Exception:
                pass
        return self._result

    def __iter__(self) -> Iterator[str]:
        if self._finished:
            if self._result.error is not None:
                raise self._result.error
            return
        if self._started:
            raise RuntimeError(f"{self._result.target}: this stream is already being read; a "
                               "stream is read once, by one loop")
        self._started = True
        parts = self._parts
        try:
            first = self._start()
            if first is None:
                return
            parts.append(first)
            yield first
            for text in self._deltas:  # cf. TextStream: one socket read per delta, no queue
                parts.append(text)
                yield text
            self._finish()
        except Exception as exc:
            self._finish(error=exc)
            raise
        finally:
            if not self._finished:  # left early: a break, the caller's kill or timeout
                self.close()

    def events(self) -> Iterator[StreamEvent]:
        """The stream as typed events: :class:`TextDelta` each, then :class:`Done`."""
        for text in self:
            yield TextDelta(text)
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
                yield from_json(self.text, allow_partial="trailing-strings")
            except ValueError:  # nothing parseable yet (e.g. whitespace only)
                continue

    def close(self) -> None:
        """Stop reading: the connection is closed (the provider stops generating) and the Result
        holds a :class:`~greenagents.errors.StreamClosed`. Does nothing once the stream ended."""
        if self._finished:
            return
        if self._body is not None:
            self._body.close()
        self._finish(error=StreamClosed(
            f"{self._result.target}: the stream was closed after {len(self._parts)} deltas, "
            "before the answer's end (its text so far is stream.text)"))

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @_with_owner
    def _start(self) -> str | None:
        """Open the stream and read its first delta, retrying and falling back as a call does.
        Returns None for an empty answer; raises the last error when every attempt failed."""
        assert self._state is not None and self._policy is not None
        state, policy = self._state, self._policy
        for model, endpoint in self._endpoints:
            try:
                first = call_with_retries(
                    lambda m=model, e=endpoint: self._open(m, e),  # type: ignore[misc]
                    policy, on_wait=state.waited)
            except Exception as exc:
                self._result.error, self._result.model = exc, model
                if not (retryable(exc) or isinstance(exc, QuotaExceeded)):
                    break
                continue
            self._result.error, self._result.model = None, model
            if first is None:
                self._finish()
            return first
        assert self._result.error is not None
        raise self._result.error

    def _open(self, model: str, endpoint: Endpoint) -> str | None:
        """One attempt up to its first delta (None: the answer ended with no text)."""
        assert self._state is not None and self._policy is not None
        state, agent = self._state, self._state.agent
        timeout = agent.timeout or settings().timeout
        started = time.monotonic()
        limit = self._policy.deadline
        end = state.started + limit if limit is not None else None
        if end is not None and end <= started:
            raise CallTimeout(f"{agent.__qualname__}: its retry deadline of {limit}s passed; "
                              "raise Retry(deadline=...)")
        first_token = started + (getattr(agent, "first_token_timeout", None) or timeout)
        record: dict[str, Any] = {"number": len(state.history) + 1, "model": model}
        scope = f"{endpoint.provider.name}@{endpoint.base_url}"
        body: TextStream | None = None
        try:
            limits.before_request(endpoint.provider.name, scope, model, state.messages)
            body = open_stream(endpoint.provider, endpoint.model, state.messages,
                               schema=state.spec.schema, schema_name=state.spec.name,
                               temperature=agent.temperature, max_tokens=agent.max_tokens,
                               timeout=min(timeout, first_token - started))
            if end is None or first_token < end:
                body.body.set_deadline(first_token, "first_token_timeout")
            else:
                body.body.set_deadline(end, "Retry(deadline=...)")
            deltas = iter(body)
            first = next(deltas, None)
            limits.observe(scope, limited=False)
        except BaseException as exc:
            if body is not None:
                body.close()
            record.update(error=type(exc).__name__, status=getattr(exc, "status", None))
            if isinstance(exc, RateLimited):
                limits.observe(scope, limited=True, retry_after=exc.retry_after)
            raise
        finally:
            state.history.append(Attempt(**record, duration_s=time.monotonic() - started))
        assert body is not None
        body.body.set_deadline(end, "Retry(deadline=...)")
        self._body, self._model, self._deltas = body, model, deltas
        return first

    def _count_usage(self) -> None:
        assert self._state is not None and self._body is not None
        usage = self._body.reader.usage(limits.estimate_tokens(self._state.messages))
        by_model = self._state.usage_by_model
        by_model[self._model] = by_model.get(self._model, Usage()) + usage

    @_with_owner
    def _finish(self, error: BaseException | None = None) -> None:
        """Fill in and record the Result, once: value (validated) or error, usage, cost."""
        if self._finished:
            return
        self._finished = True
        assert self._state is not None
        result, state = self._result, self._state
        if self._body is not None:
            self._count_usage()
            if error is None:
                try:
                    result.value = state.spec.parse(self.text)
                except Exception as exc:  # an invalid structured answer: not re-asked
                    error = exc
        if error is not None:
            result.error, result.value = error, None
        result.attempts = state.attempts
        result.history = tuple(state.history)
        result.usage = state.usage
        result.cost_usd = state.cost(result.model or "")
        result.duration_s = time.perf_counter() - self._began
        tracking.record(result, self._inputs)
