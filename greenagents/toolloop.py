"""The tool loop of an agent: ask the model, run the tools it asked for, send the results, repeat.

One turn's tool calls run concurrently — a greenlet each when patched, threads through
:func:`greenagents.batch` otherwise — at most the agent's ``tool_concurrency`` at once, each call within
``tool_timeout`` seconds and in a copy of the caller's contextvars. A tool that raises, times out,
gets arguments that do not validate, or is not one the agent has, does not end the call: the error
text goes back to the model as that call's result (it can correct itself), and the Result counts
it (``Result.tool_errors``). ``tool_errors = "raise"`` fails the call instead with
:class:`~greenagents.errors.ToolError`. A model still asking for tools after ``max_turns`` turns
fails it with :class:`~greenagents.errors.ToolLoopError`.

Each turn's model call is :meth:`Turns.answer` — retries, re-asks and fallbacks as for any agent;
:class:`Loop` is the same loop driven from outside, so a stream answers each turn as it arrives.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import gevent.lock

from . import backends, errors, hooks, runtime, slots
from .asyncbridge import explain_running_loop
from .errors import ConfigError, ToolError, ToolLoopError, redact
from .patching import available
from .providers import Completion, Endpoint, ToolRequest
from .result import Attempt, Result
from .result import ToolCall as ToolRecord
from .retry import Policy
from .tools import Tool, ToolArgumentsError, ToolContext, toolbox

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["LOG_CAP", "Loop", "Toolbox", "Turns", "run"]

#: Characters of a tool call's arguments or output kept in ``Result.history`` and the execution log.
LOG_CAP = 2000
#: What the model is told once its work is done when its provider needs a last turn for the output.
FINISH = "Now give your final answer by calling the output tool."


class Turns(Protocol):
    """What the loop needs of an agent call's state (``agent._Call``)."""

    agent: type[Agent]
    messages: list[dict[str, Any]]
    finishing: bool
    turn: int
    model: str | None
    history: list[Attempt | ToolRecord]

    def answer(self, endpoints: list[tuple[str, Endpoint]], policy: Policy) -> Any: ...


class Toolbox:
    """An agent class's tools, checked once: by name, and the specs sent to the model."""

    def __init__(self, agent: type[Agent]):
        owner = agent.__qualname__
        self.source = agent.tools
        self.tools: dict[str, Tool] = toolbox(agent.tools, owner)
        self.specs = tuple(t.spec() for t in self.tools.values())
        self.methods = any(t.is_method for t in self.tools.values())
        if self.specs:
            _check_settings(agent)

    def bound(self, agent: type[Agent]) -> dict[str, Tool]:
        """The tools for one call: methods bound to a fresh instance of the agent."""
        if not self.methods:
            return self.tools
        instance = agent()
        return {name: t.bound(instance) for name, t in self.tools.items()}


def _check_settings(agent: type[Agent]) -> None:
    name = agent.__qualname__
    if not isinstance(agent.max_turns, int) or agent.max_turns < 1:
        raise ConfigError(f"{name}.max_turns={agent.max_turns!r}: use an int >= 1")
    if not isinstance(agent.tool_concurrency, int) or agent.tool_concurrency < 1:
        raise ConfigError(f"{name}.tool_concurrency={agent.tool_concurrency!r}: use an int >= 1")
    if agent.tool_timeout is not None and not agent.tool_timeout > 0:
        raise ConfigError(f"{name}.tool_timeout={agent.tool_timeout!r}: use seconds > 0 or None")
    if agent.tool_errors not in ("return", "raise"):
        raise ConfigError(f"{name}.tool_errors={agent.tool_errors!r}: use 'return' (the model "
                          "sees the error) or 'raise' (the call fails)")


def run(state: Turns, box: Toolbox, inputs: Mapping[str, Any],
        endpoints: list[tuple[str, Endpoint]], policy: Policy) -> Any:
    """Turns until the model answers without tools: the validated output, or raise."""
    loop = Loop(state, box, inputs, endpoints)
    while True:
        loop.begin()
        try:
            answer = state.answer(endpoints, policy)
            calls = loop.calls_for(answer)
            if calls:
                loop.run_calls(calls)
        except BaseException as exc:
            loop.end(exc)
            raise
        loop.end()
        if calls is None:
            return answer


class Loop:
    """One call's turns, driven by whoever asks the model: :func:`run` above, or a stream
    (:mod:`greenagents.streaming`) that reads each turn's answer as it arrives. Per turn:
    :meth:`begin`, the model's answer, :meth:`calls_for` it, :meth:`run_calls`, :meth:`end`.
    """

    def __init__(self, state: Turns, box: Toolbox, inputs: Mapping[str, Any],
                 endpoints: list[tuple[str, Endpoint]]):
        self.state, self.inputs, self.first_model = state, inputs, endpoints[0][0]
        self.tools = box.bound(state.agent)
        self.secrets = tuple(endpoint.api_key for _, endpoint in endpoints)
        self.turn = self.asked = 0

    def begin(self) -> None:
        self.turn += 1
        self.state.turn, self.asked = self.turn, 0
        if hooks.active:
            hooks.emit(hooks.TurnStarted(number=self.turn, model=self.first_model))

    def end(self, error: BaseException | None = None) -> None:
        """The turn ended, after the tools it asked for ran (or with ``error``)."""
        if hooks.active:
            hooks.emit(hooks.TurnEnded(number=self.turn, model=self.state.model or "",
                                       tool_calls=0 if error else self.asked, error=error))

    def calls_for(self, answer: Any) -> Sequence[ToolRequest] | None:
        """What the turn's ``answer`` asks of the loop: None when it is the validated output;
        else the loop goes on, with the tool calls to run next (the assistant's turn appended
        to the conversation) or none — its provider asks for the output in a turn of its own,
        whose request is appended and ``state.finishing`` set.
        """
        state, agent = self.state, self.state.agent
        if not isinstance(answer, Completion):
            return None
        if not answer.tool_calls:  # done, but its provider asks for the output in a turn of its own
            state.messages += [{"role": "assistant", "content": answer.text or "Done."},
                               {"role": "user", "content": FINISH}]
            state.finishing = True
            return ()
        if self.turn == agent.max_turns:  # their results could never be read: do not run them
            names = ", ".join(sorted({call.name for call in answer.tool_calls}))
            raise ToolLoopError(f"{agent.__qualname__}: the model still asked for tools ({names}) "
                                f"after max_turns={agent.max_turns} turns; raise max_turns, or "
                                "make the instructions say when to stop calling tools")
        state.messages.append(_assistant(answer))
        return answer.tool_calls

    def run_calls(self, calls: Sequence[ToolRequest],
                  on_finished: Callable[[ToolRequest, ToolRecord], None] | None = None) -> None:
        """Run the turn's tool calls; their results go into the conversation. ``on_finished``
        hears of each call as it ends, with its history entry (a stream's ``ToolFinished``)."""
        context = {"inputs": self.inputs, "agent": self.state.agent.__qualname__,
                   "turn": self.turn}
        self.asked = len(calls)
        self.state.messages += _run_calls(self.state, self.tools, calls, context, self.secrets,
                                          on_finished)


def _assistant(completion: Completion) -> dict[str, Any]:
    """The model's turn as a neutral message (OpenAI's shape; providers translate it)."""
    arguments = [c.arguments if isinstance(c.arguments, str)
                 else json.dumps(c.arguments, ensure_ascii=False) for c in completion.tool_calls]
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": a}}
             for c, a in zip(completion.tool_calls, arguments, strict=True)]
    # with no text, a provider gives the first call's arguments as the text (for the forced
    # output tool); that is not something the model said
    said = completion.text if completion.text != arguments[0] else None
    return {"role": "assistant", "content": said or None, "tool_calls": calls}


def _run_calls(state: Turns, tools: dict[str, Tool], calls: Sequence[ToolRequest],
               context: dict[str, Any], secrets: tuple[str | None, ...],
               on_finished: Callable[[ToolRequest, ToolRecord], None] | None = None,
               ) -> list[dict[str, Any]]:
    """Run one turn's calls concurrently; their result messages, in the order asked."""
    agent = state.agent
    ended: dict[int, tuple[ToolRecord, str | None, str | None, Result[Any] | None]] = {}

    def finished(index: int, result: Result[Any] | None) -> None:
        call = calls[index]
        output, error = _outcome(agent, tools, call, result)
        record = ToolRecord(
            turn=context["turn"], tool=call.name, arguments=_logged(call.arguments, secrets),
            output=None if output is None else _logged(output, secrets),
            error=None if error is None else _logged(error, secrets),
            duration_s=result.duration_s if result is not None else 0.0)
        ended[index] = (record, output, error, result)
        if on_finished is not None:
            on_finished(call, record)

    known = [index for index, call in enumerate(calls) if call.name in tools]
    for index, call in enumerate(calls):
        if call.name not in tools:
            finished(index, None)
    jobs = [(tools[calls[i].name], calls[i].arguments, calls[i].id, context) for i in known]
    results = _run_all(jobs, agent.tool_concurrency, agent.tool_timeout,
                       lambda position, result: finished(known[position], result))
    for index, ran in zip(known, results, strict=True):
        if index not in ended:  # threads (unpatched), or a greenlet killed before its end
            finished(index, ran)
    messages: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        record, output, error, result = ended[index]
        state.history.append(record)
        if error is not None and agent.tool_errors == "raise":
            raise ToolError(f"{agent.__qualname__}: tool {call.name!r} failed on turn "
                            f"{context['turn']}: {redact(error, *secrets)}",
                            tool=call.name) from (result.error if result is not None else None)
        if error is None:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
        else:  # is_error: Anthropic's flag on a failed tool_result (OpenAI has none; dropped)
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": f"Error: {error}", "is_error": True})
    return messages


#: One tool call to run: the tool, the model's arguments, the call's id, and what its
#: :class:`ToolContext` holds besides the id (made only for a tool that takes one).
_Job = tuple[Tool, str | Mapping[str, Any], str, dict[str, Any]]


def _run_all(jobs: Sequence[_Job], limit: int, timeout: float | None,
             done: Callable[[int, Result[Any]], None] | None = None) -> list[Result[Any]]:
    """Run one turn's tool calls at once, at most ``limit`` together, each within ``timeout``;
    their Results in order. Patched, ``done(index, result)`` is told of each as it ends.

    Patched: one greenlet per call, each in a copy of the caller's contextvars, awaited together.
    That is all a turn needs — its calls are few and known, and all awaited — so it skips what
    :func:`greenagents.batch` does for a run of unknown length (a feeder greenlet, a result
    queue, run ids, a progress bar, a blocking kill of its group): a turn of three quick tools
    measured about 0.45 ms of CPU through it, 0.3 ms this way. Unpatched, a tool runs in a
    thread through :func:`greenagents.batch`, which can stop waiting for one past its timeout.
    """
    if not available():
        return runtime.batch([(_run_tool, job, {}) for job in jobs], max_concurrent=limit,
                             timeout=timeout, progress=False, warn_failures=False)
    bound = gevent.lock.Semaphore(limit) if limit < len(jobs) else None
    running = []
    for index, job in enumerate(jobs):
        greenlet = backends.Task(_run_timed, index, job, bound, timeout, done)
        greenlet.gr_context = contextvars.copy_context()
        greenlet.start()
        running.append(greenlet)
    try:
        gevent.joinall(running)  # returns once every one of them has ended
    except BaseException:  # the call was killed or timed out while its tools ran: they end with it
        gevent.killall(running, block=False)
        raise
    # a greenlet ended by what _run_timed lets through (KeyboardInterrupt...) has no value
    return [greenlet.value or Result(target=job[0].name, error=greenlet.exception)
            for greenlet, job in zip(running, jobs, strict=True)]


def _run_timed(index: int, job: _Job, bound: gevent.lock.Semaphore | None,
               timeout: float | None,
               done: Callable[[int, Result[Any]], None] | None = None) -> Result[Any]:
    """Tool call ``index`` in its own greenlet: its slot of ``tool_concurrency``, its timeout,
    and its outcome as a Result (only a kill escapes), told to ``done`` too."""
    tool = job[0]
    slot = None if bound is None else slots.Slot(bound)
    slots.current.set(slot)  # a backoff inside the tool gives back its own slot, not the agent's
    if slot is not None:
        slot.acquire()
    start = time.perf_counter()
    timer = gevent.Timeout(timeout)  # None: never fires
    try:
        with timer:
            value = _run_tool(*job)
        result = Result(target=tool.name, value=value, duration_s=time.perf_counter() - start)
    except gevent.Timeout as exc:
        error: BaseException = exc if exc is not timer else errors.Timeout(
            f"tool {tool.name!r} did not finish within tool_timeout={timeout}s")
        result = Result(target=tool.name, error=error, duration_s=time.perf_counter() - start)
    except Exception as exc:  # a tool's failure is its result, told to the model
        result = Result(target=tool.name, error=errors.scrub(explain_running_loop(exc)),
                        duration_s=time.perf_counter() - start)
    finally:
        if slot is not None:
            slot.release()
    if done is not None:
        done(index, result)
    return result


def _run_tool(tool: Tool, arguments: str | Mapping[str, Any], call_id: str,
              context: dict[str, Any]) -> str:
    """Run one tool call in its greenlet, told to the hooks' listeners (a ToolCallStarted, then
    a ToolCallEnded with its duration and error: a timeout is the error raised in the tool)."""
    given = None if tool.context_param is None else ToolContext(call_id=call_id, **context)
    if not hooks.active:
        return tool.invoke(arguments, given)
    hooks.emit(hooks.ToolCallStarted(id=call_id, name=tool.name,
                                     arguments=_as_mapping(arguments)))
    start, error = time.perf_counter(), None
    try:
        return tool.invoke(arguments, given)
    except BaseException as exc:
        error = exc
        raise
    finally:
        hooks.emit(hooks.ToolCallEnded(id=call_id, name=tool.name, error=error,
                                       duration_s=time.perf_counter() - start))


_run_tool.__greenagents_part__ = True  # type: ignore[attr-defined]  # not a call of its own


def _as_mapping(arguments: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The model's arguments as a mapping for listeners (raw text that is not a JSON object is
    kept under ``"raw"``)."""
    if not isinstance(arguments, str):
        return arguments
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"raw": arguments}


def _outcome(agent: type[Agent], tools: dict[str, Tool], call: ToolRequest,
             result: Result[Any] | None) -> tuple[str | None, str | None]:
    """``(output, None)`` when the tool ran, else ``(None, what went wrong)`` for the model."""
    if result is None:
        return None, (f"there is no tool named {call.name!r}; the tools are: "
                      f"{', '.join(tools)}")
    if result.error is None:
        return result.value, None
    if isinstance(result.error, ToolArgumentsError):
        return None, str(result.error)
    if isinstance(result.error, errors.Timeout):
        return None, f"the tool did not finish within tool_timeout={agent.tool_timeout}s"
    return None, f"the tool raised {type(result.error).__name__}: {result.error}"


def _logged(value: str | Mapping[str, Any], secrets: tuple[str | None, ...]) -> str:
    """Text for the history and the log: API keys masked, cut to :data:`LOG_CAP` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = redact(text, *secrets)
    return text if len(text) <= LOG_CAP else f"{text[:LOG_CAP]}… ({len(text)} characters)"
