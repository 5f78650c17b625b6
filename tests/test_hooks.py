"""The hooks seam: which events a call emits, in which greenlet, and that a hook never fails a call."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

import greenagents as ga
from greenagents import hooks
from greenagents.testing import Simulator
from tests.agents import SentimentAgent, at

FAST = ga.Retry(max=3, backoff="fixed", base=0.01, jitter=False)


@pytest.fixture
def events() -> Iterator[list[Any]]:
    seen: list[Any] = []
    with hooks.subscribed(seen.append):
        yield seen
    assert not hooks.active


def kinds(events: list[Any], call: hooks.CallInfo | None = None) -> list[str]:
    return [type(e).__name__ for e in events if call is None or e.call is call]


def test_nothing_subscribed_means_inactive_and_no_call_opened() -> None:
    assert not hooks.active
    assert hooks.call_opened("x") is None
    assert isinstance(hooks.waiting("slot"), type(hooks.waiting("retry")))


def test_batch_of_functions_one_call_each(events: list[Any]) -> None:
    results = ga.each([1, -2, "x"], abs)
    ended = [e for e in events if isinstance(e, hooks.CallEnded)]
    assert sorted(e.result.index for e in ended) == [0, 1, 2]
    assert {e.call.target for e in ended} == {"abs"}
    assert [e.result for e in sorted(ended, key=lambda e: e.result.index)] == results
    assert sum(isinstance(e, hooks.WaitEnded) and e.kind == "slot" for e in events) == 3


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=0.01)
def test_agent_in_batch_is_one_call_with_its_attempts_and_waits(sim: Simulator,
                                                                events: list[Any]) -> None:
    agent = at(SentimentAgent, sim.base_url, retries=FAST)
    result = ga.batch([(agent, {"text": "fine"})])[0]
    assert result.ok and result.attempts == 2
    started = [e for e in events if isinstance(e, hooks.CallStarted)]
    assert len(started) == 1, "the runtime's call and the agent's are one call"
    call = started[0].call
    assert call is not None and call.agent and call.index == 0
    assert kinds(events, call) == ["CallStarted", "AttemptStarted", "AttemptEnded", "WaitStarted",
                                   "WaitEnded", "AttemptStarted", "AttemptEnded", "CallEnded"]
    first, second = [e for e in events if isinstance(e, hooks.AttemptEnded)]
    assert isinstance(first.error, ga.errors.RateLimited) and first.attempt.status == 429
    assert second.error is None and second.usage is not None and second.usage.total_tokens > 0
    assert second.response_model and second.finish_reason and second.text
    assert first.provider == "openai" and second.attempt.model == "openai/gpt-4o-mini"
    wait = next(e for e in events if isinstance(e, hooks.WaitEnded) and e.kind == "retry")
    assert wait.seconds > 0


def test_agent_called_from_a_function_is_a_child_call(sim: Simulator, events: list[Any]) -> None:
    agent = at(SentimentAgent, sim.base_url)

    def two_opinions(text: str) -> bool:
        return agent.run(text=text) == agent.run(text=text + "!")

    assert ga.batch([(two_opinions, {"text": "great"})])[0].ok
    started = [e.call for e in events if isinstance(e, hooks.CallStarted)]
    outer, *inner = started
    assert outer.target.endswith("two_opinions") and not outer.agent
    assert len(inner) == 2 and all(c.parent is outer and c.agent for c in inner)


def test_agent_call_outside_a_batch_is_a_call(sim: Simulator, events: list[Any]) -> None:
    assert at(SentimentAgent, sim.base_url).call(text="fine").ok
    assert kinds(events) == ["CallStarted", "AttemptStarted", "AttemptEnded", "CallEnded"]
    assert hooks.current() is None, "the call's context is restored when it ends"


def test_listeners_run_in_the_greenlet_of_the_call(sim: Simulator) -> None:
    where: list[tuple[Any, Any]] = []

    def note(event: hooks.AttemptEnded) -> None:
        where.append((gevent.getcurrent(), event.call))

    with hooks.subscribed(note, hooks.AttemptEnded):
        ga.batch([(at(SentimentAgent, sim.base_url), {"text": f"t{i}"}) for i in range(5)])
    assert len({id(g) for g, _ in where}) == 5 and gevent.getcurrent() not in [g for g, _ in where]


def test_a_failing_hook_never_fails_the_call_and_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    @ga.on_call_end
    def broken(event: hooks.CallEnded) -> None:
        calls.append(1)
        raise RuntimeError("bug in a hook")

    try:
        with caplog.at_level(logging.WARNING, logger="greenagents.hooks"):
            results = ga.each(range(5), abs)
    finally:
        hooks.unsubscribe(broken)
    assert all(r.ok for r in results) and len(calls) == 5
    failures = [r for r in caplog.records if getattr(r, "event", None) == "hook.failed"]
    assert len(failures) == 1 and "bug in a hook" in caplog.text


def test_on_attempt_sees_fallbacks(sim_factory: Any) -> None:
    down = sim_factory(faults={"server_error": 1.0})
    backup = sim_factory()
    agent = at(SentimentAgent, down.base_url, retries=ga.Retry(max=1, base=0.01, jitter=False),
               fallbacks=(("anthropic/claude-haiku-4-5", backup.anthropic_url),))
    seen: list[hooks.AttemptEnded] = []
    ga.on_attempt(seen.append)
    try:
        assert agent.call(text="x").ok
    finally:
        hooks.unsubscribe(seen.append)
    assert [(e.provider, e.attempt.error) for e in seen] == [
        ("openai", "ServerError"), ("openai", "ServerError"), ("anthropic", None)]


def test_a_killed_call_still_ends_for_listeners(events: list[Any]) -> None:
    results = ga.batch([(gevent.sleep, (5,), {})], deadline=0.2)
    assert isinstance(results[0].error, ga.errors.Timeout)
    ended = [e for e in events if isinstance(e, hooks.CallEnded)]
    assert len(ended) == 1 and isinstance(ended[0].result.error, gevent.GreenletExit)


def test_a_tool_using_agent_emits_its_turns_and_tool_calls(sim: Simulator,
                                                           events: list[Any]) -> None:
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        gevent.sleep(0.05)
        return f"sunny in {city}"

    def broken(city: str) -> str:
        """Always fails."""
        gevent.sleep(0.05)
        raise RuntimeError("no data")

    agent = type("Trip", (ga.Agent,), {"model": "openai/gpt-4o-mini", "base_url": sim.base_url,
                                        "tools": (get_weather, broken)})
    result = agent.call("Oslo")
    assert result.ok and result.tool_errors == 1
    (call,) = {e.call for e in events}
    assert call is not None and call.agent, "the tool runs are part of the agent's call"
    names = [n for n in kinds(events) if not n.startswith("Wait")]  # the tools' slot waits
    assert names[:3] == ["CallStarted", "TurnStarted", "AttemptStarted"]
    assert names[3:6] == ["AttemptEnded", "ToolCallStarted", "ToolCallStarted"], \
        "one turn's tools start together"
    assert names[6:8] == ["ToolCallEnded", "ToolCallEnded"]
    assert names[8:] == ["TurnEnded", "TurnStarted", "AttemptStarted", "AttemptEnded",
                         "TurnEnded", "CallEnded"]
    first, last = [e for e in events if isinstance(e, hooks.TurnEnded)]
    assert (first.number, first.tool_calls, last.number, last.tool_calls) == (1, 2, 2, 0)
    assert first.model == "openai/gpt-4o-mini" and first.error is None
    ended = {e.name: e for e in events if isinstance(e, hooks.ToolCallEnded)}
    assert isinstance(ended["broken"].error, RuntimeError) and ended["get_weather"].error is None
    assert all(0.05 <= e.duration_s < 5 for e in ended.values()), "each tool's own run"
    started = {e.name: e for e in events if isinstance(e, hooks.ToolCallStarted)}
    assert started["get_weather"].arguments.keys() == {"city"}
    assert started["get_weather"].id == ended["get_weather"].id


def test_a_slow_tool_ends_with_its_timeout(sim: Simulator, events: list[Any]) -> None:
    def slow(city: str) -> str:
        """Takes its time."""
        gevent.sleep(5)
        return city

    agent = type("Slow", (ga.Agent,), {"model": "openai/gpt-4o-mini", "base_url": sim.base_url,
                                       "tools": (slow,), "tool_timeout": 0.05})
    assert agent.call("Oslo").tool_errors == 1
    (ended,) = [e for e in events if isinstance(e, hooks.ToolCallEnded)]
    assert isinstance(ended.error, gevent.Timeout) and 0.05 <= ended.duration_s < 5
