"""One model turn of a streamed call: its request sent and answered up to the first delta, retried
and fallen back as any call is; then read to its end by the caller's loop; then settled.

A streamed attempt is the same attempt :meth:`Agent.call <greenagents.Agent.call>` makes, spread
over time: the circuit breaker, the budget reservation, the rate limits and the hooks'
``AttemptStarted`` come before the request; the breaker and the limits hear how the request went at
its first delta; usage, the budget's charge, the history entry and ``AttemptEnded`` come at its
end, when the usage is known — so a span or a metric of a streamed attempt covers its whole answer.

Until its first delta a turn is retried (the caller has seen nothing of it). A turn of tool calls
only has no delta for the caller: it is read whole inside the retries, its first tool call
meeting ``first_token_timeout`` as a first delta would. So is a turn whose text cannot be the
answer (a provider that asks for structured output in a turn of its own: its working turns).

Once its first delta reached the caller, a turn lets the other greenlets run before it reads on
(one switch per turn, not per token). Without it, a stream whose answer came in a burst (a server
behind schedule sends the overdue events in one write; a busy client finds many in one read)
reads the whole burst before the next stream shows its first token: with 1,000 such streams the
last first token waited for every other stream's answer (figure 9's workload, 1,000 streams of
200 tokens at 50/s, two runs each on 2 cores at load 5: first token late p95 1.6–2.1 s without
this switch, 1.1 s with it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from itertools import chain
from typing import Any, Protocol

import gevent

from . import breakers, budgets, hooks, limits
from . import learned_limits as learned
from .config import settings
from .errors import RateLimited
from .errors import Timeout as CallTimeout
from .patching import available
from .providers import Completion, Endpoint
from .providers.streams import TextStream, open_stream
from .result import Attempt, ToolCall, Usage
from .retry import Policy, with_fallbacks
from .structured import OutputSpec

__all__ = ["CallState", "StreamedTurn"]


class CallState(Protocol):
    """What a stream shares with :meth:`Agent.call`'s bookkeeping (``agent._Call``)."""

    agent: Any
    messages: list[dict[str, Any]]
    spec: OutputSpec
    tools: Sequence[dict[str, Any]]
    finishing: bool
    turn: int
    model: str | None
    usage_by_model: dict[str, Usage]
    history: list[Attempt | ToolCall]
    started: float

    @property
    def usage(self) -> Usage: ...
    @property
    def attempts(self) -> int: ...
    def cost(self, model: str) -> float | None: ...
    def waited(self, seconds: float) -> None: ...


class _Live:
    """The attempt that answered, until its stream ends."""

    def __init__(self, body: TextStream, deltas: Iterator[str], endpoint: Endpoint,
                 record: dict[str, Any], start: float, charge: ExitStack | None,
                 billed: list[Usage],
                 working: bool, hold: bool) -> None:
        self.body, self.deltas, self.endpoint, self.record = body, deltas, endpoint, record
        self.start, self.charge, self.billed = start, charge, billed
        self.working, self.hold = working, hold


class StreamedTurn:
    """One turn: :meth:`open` (retries, fallbacks), :meth:`deltas` for the caller, :meth:`end`."""

    def __init__(self, state: CallState, endpoints: Sequence[tuple[str, Endpoint]],
                 policy: Policy) -> None:
        self.state, self.endpoints, self.policy = state, endpoints, policy
        self.first: str | None = None
        self.live: _Live | None = None

    def open(self) -> None:
        """Send the request and read up to the first delta for the caller (or the turn's end),
        retrying and falling back as a call does; raise the last error when nothing answered."""
        self.first = with_fallbacks(self.endpoints, self._attempt, self.policy,
                                    on_wait=self.state.waited, on_model=self._trying)

    def _trying(self, model: str) -> None:
        self.state.model = model

    def deltas(self) -> Iterator[str]:
        """The turn's text deltas for the caller: the first (already read), then each read from
        the socket as the caller asks for it (chained and filtered in C: no generator of its own
        to resume per delta)."""
        rest: Iterator[str] = filter(None, self.live.deltas) if self.live is not None else iter(())
        # "" marks a tool call's start (see TextStream): not a delta for the caller
        return chain(self._first(), rest) if self.first else rest

    def _first(self) -> Iterator[str]:
        assert self.first is not None
        yield self.first
        if available():  # the others' turn: see the module docstring
            gevent.sleep(0)

    def end(self, error: BaseException | None = None) -> tuple[Completion, bool] | None:
        """Settle the answering attempt, once: ``(its completion, whether the loop goes on)``.

        Usage is what the provider reported, else (cut short) the prompt as estimated and one
        token per delta; it is charged to the budgets. With ``error`` the connection is closed
        first, so the provider stops generating.
        """
        live, state = self.live, self.state
        if live is None:
            return None
        self.live = None
        if error is not None:
            live.body.close()
        reader = live.body.reader
        completion = reader.completion(  # estimated only when the provider did not say
            0 if reader.prompt_tokens is not None else limits.estimate_tokens(state.messages))
        model = live.record["model"]
        state.usage_by_model[model] = state.usage_by_model.get(model, Usage()) + completion.usage
        if live.charge is not None:
            live.billed.append(completion.usage)
            live.charge.close()
        if error is not None:
            live.record.update(error=type(error).__name__, status=getattr(error, "status", None))
        attempt = Attempt(**live.record, duration_s=time.monotonic() - live.start)
        state.history.append(attempt)
        if hooks.active:
            hooks.attempt_ended(attempt, live.endpoint.provider.name, completion, error)
        return completion, live.working and (bool(completion.tool_calls) or live.hold)

    def _attempt(self, model: str, endpoint: Endpoint) -> str | None:
        """One request, up to its first delta for the caller (None: the turn ended without)."""
        state, agent = self.state, self.state.agent
        timeout = agent.timeout or settings().timeout
        start = time.monotonic()
        limit = self.policy.deadline
        end = state.started + limit if limit is not None else None
        working = bool(state.tools) and not state.finishing
        # a provider that cannot offer tools and ask for the output at once asks for it last
        withheld = working and not endpoint.provider.structured_with_tools
        hold = withheld and state.spec.schema is not None  # this turn's text is not the answer
        record: dict[str, Any] = {"number": state.attempts + 1, "model": model, "turn": state.turn}
        scope = f"{endpoint.provider.name}@{endpoint.base_url}"
        breaker, probe = f"{scope}/{endpoint.model}", False
        sent, cut_short = False, False  # what the breaker may learn from how this attempt ends
        charge: ExitStack | None = None  # the budgets' reservation, held until the stream ends
        billed: list[Usage] = []
        body = None
        if hooks.active:
            hooks.attempt_started(record["number"], endpoint.provider.name, model, state.messages)
        try:
            probe = breakers.before(breaker, start)
            if budgets.active():
                charge = ExitStack()
                billed = charge.enter_context(budgets.charge(model, state.messages,
                                                             agent.max_tokens))
            limits.before_request(endpoint.provider.name, scope, model, state.messages, until=end)
            ticket = learned.before_request(endpoint.provider.name, breaker, model, state.messages,
                                            max_tokens=agent.max_tokens, until=end)
            now = time.monotonic()
            if end is not None and end <= now:
                raise CallTimeout(f"{agent.__qualname__}: its retry deadline of {limit}s passed; "
                                  "raise Retry(deadline=...)")
            first_token = now + (agent.first_token_timeout or timeout)
            cut_short = end is not None and end - now < timeout
            sent = True
            body = open_stream(endpoint.provider, endpoint.model, state.messages,
                               schema=None if withheld else state.spec.schema,
                               schema_name=state.spec.name, temperature=agent.temperature,
                               max_tokens=agent.max_tokens, tools=state.tools,
                               timeout=min(timeout, first_token - now),
                               on_response=ticket.observe)
            if end is None or first_token < end:
                body.body.set_deadline(first_token, "first_token_timeout")
            else:
                body.body.set_deadline(end, "Retry(deadline=...)")
            deltas = iter(body)
            first = next(deltas, None)  # the first text, or "" as a tool call begins
            body.body.set_deadline(end, "Retry(deadline=...)")
            if hold:
                first = None
                for _ in deltas:
                    pass
            elif first == "":  # tool calls: read on, for text or the end, inside the retries
                first = next((text for text in deltas if text), None)
            breakers.after(breaker, None, probe, start)
            limits.observe(scope, limited=False)
        except BaseException as exc:
            if body is not None:
                body.close()
            # no request, or a timeout cut short by the call's deadline: not the endpoint's
            evidence = sent and not (cut_short and isinstance(exc, CallTimeout))
            breakers.after(breaker, exc, probe, start, evidence=evidence)
            record.update(error=type(exc).__name__, status=getattr(exc, "status", None))
            if isinstance(exc, RateLimited):
                limits.observe(scope, limited=True, retry_after=exc.retry_after)
            if charge is not None:
                charge.close()
            attempt = Attempt(**record, duration_s=time.monotonic() - start)
            state.history.append(attempt)
            if hooks.active:
                hooks.attempt_ended(attempt, endpoint.provider.name, None, sys.exc_info()[1])
            raise
        self.live = _Live(body, deltas, endpoint, record, start, charge, billed, working, hold)
        return first
