"""A streamed call is a call like any other: the hooks' events, OpenTelemetry spans (real SDK),
Prometheus metrics (scraped for real), the execution log, budgets and the response cache — against
the simulator over real HTTP."""

from __future__ import annotations

import json
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import greenagents as ga
from greenagents import budgets, errors, hooks, tracking
from greenagents.testing import Simulator
from tests.agents import Sentiment, SentimentAgent, SummaryAgent, at
from tests.test_otel import children, named, spans, tracer
from tests.test_prometheus import endpoint, scrape, total
from tests.test_tool_loop import agent as tool_agent

assert spans and endpoint  # fixtures of the OpenTelemetry and Prometheus tests

pytestmark = pytest.mark.usefixtures("http_transport")  # every test over urllib3 and geventhttpclient
FAST = ga.Retry(max=3, backoff="fixed", base=0.01, jitter=False)


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


def get_time(city: str) -> str:
    """Local time in a city."""
    raise RuntimeError("clock broken")


@pytest.fixture
def events() -> Iterator[list[Any]]:
    seen: list[Any] = []
    with hooks.subscribed(seen.append):
        yield seen


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events if not type(e).__name__.startswith("Wait")]


# --- hooks ---------------------------------------------------------------------------------------

def test_a_stream_is_one_call_whose_attempt_ends_with_its_answer(
        sim: Simulator, events: list[Any]) -> None:
    stream = at(SummaryAgent, sim.anthropic_url).stream(text="hi")
    inside = [hooks.current() for _ in stream]
    assert inside and all(c is None for c in inside), "the caller's loop is not inside the call"
    assert kinds(events) == ["CallStarted", "AttemptStarted", "AttemptEnded", "CallEnded"]
    (call,) = {e.call for e in events}
    assert call is not None and call.agent and call.target == stream.result.target
    ended = next(e for e in events if isinstance(e, hooks.AttemptEnded))
    assert ended.usage == stream.result.usage and ended.text == stream.result.value
    assert ended.finish_reason == "end_turn" and ended.error is None
    assert ended.attempt.duration_s > 0
    assert events[-1].result is stream.result


def test_retries_and_a_cut_short_stream_are_told(sim_factory: Any, events: list[Any]) -> None:
    sim = sim_factory(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=0.01,
                      answer_words=50, token_latency=0.02)
    stream = at(SummaryAgent, sim.anthropic_url, retries=FAST).stream(text="hi")
    next(iter(stream))
    stream.close()
    assert kinds(events) == ["CallStarted", "AttemptStarted", "AttemptEnded", "AttemptStarted",
                             "AttemptEnded", "CallEnded"]
    first, second = [e for e in events if isinstance(e, hooks.AttemptEnded)]
    assert isinstance(first.error, errors.RateLimited) and first.attempt.status == 429
    assert isinstance(second.error, errors.StreamClosed) and second.usage is not None
    assert any(isinstance(e, hooks.WaitEnded) and e.kind == "retry" for e in events)
    assert isinstance(events[-1].result.error, errors.StreamClosed)


def test_a_streamed_tool_agent_emits_its_turns_and_tool_calls(
        sim: Simulator, events: list[Any]) -> None:
    stream = tool_agent(sim, get_weather, get_time).stream("Oslo")
    assert stream.result.ok and stream.result.tool_errors == 1
    (call,) = {e.call for e in events}
    assert call is not None and call.agent, "the tool runs are part of the agent's call"
    names = kinds(events)
    assert names[:4] == ["CallStarted", "TurnStarted", "AttemptStarted", "AttemptEnded"]
    assert sorted(names[4:8]) == ["ToolCallEnded"] * 2 + ["ToolCallStarted"] * 2
    assert names[8:] == ["TurnEnded", "TurnStarted", "AttemptStarted", "AttemptEnded",
                         "TurnEnded", "CallEnded"]
    first, last = [e for e in events if isinstance(e, hooks.TurnEnded)]
    assert (first.tool_calls, last.tool_calls) == (2, 0)


def test_bad_inputs_are_a_call_that_ended(events: list[Any]) -> None:
    stream = SentimentAgent.stream(txt="typo")
    assert kinds(events) == ["CallStarted", "CallEnded"]
    assert isinstance(events[-1].result.error, errors.InputError) and stream.result is \
        events[-1].result


# --- OpenTelemetry -------------------------------------------------------------------------------

def test_a_streams_spans_cover_its_answer_under_the_callers_span(
        sim_factory: Any, spans: InMemorySpanExporter) -> None:
    sim = sim_factory(answer_words=20, token_latency=0.01)
    with tracer.start_as_current_span("request") as request:
        stream = at(SummaryAgent, sim.anthropic_url).stream(text="hi")  # its parent: current now
        seen = []
        for _ in stream:
            assert trace.get_current_span() is request, "the stream's spans stay its own"
            seen.append(time.time_ns())
    done = spans.get_finished_spans()
    (call,) = named(done, "invoke_agent")
    assert call.parent is not None and call.parent.span_id == request.get_span_context().span_id
    (chat,) = children(done, call)
    assert chat.name == "chat claude-haiku-4-5" and chat.end_time is not None
    assert chat.start_time is not None and chat.start_time < seen[0]
    assert chat.end_time > seen[-1], "the attempt's span lasts until its last delta"
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.usage.output_tokens"] == stream.result.usage.completion_tokens  # type: ignore[union-attr]
    assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert dict(call.attributes or {})["greenagents.cost_usd"] == stream.result.cost_usd


def test_a_streamed_tool_agent_is_a_tree_of_turns_attempts_and_tool_runs(
        sim: Simulator, spans: InMemorySpanExporter) -> None:
    stream = tool_agent(sim, get_weather, get_time, provider="anthropic").stream("Oslo")
    assert "".join(stream) and stream.result.ok
    done = spans.get_finished_spans()
    (call,) = named(done, "invoke_agent")
    first, second = children(done, call)
    assert (first.name, second.name) == ("turn 1", "turn 2")
    chat, *ran = children(done, first)
    assert chat.name == "chat claude-haiku-4-5"
    assert {s.name for s in ran} == {"execute_tool get_weather", "execute_tool get_time"}
    assert [s.name for s in children(done, second)] == ["chat claude-haiku-4-5"]


# --- Prometheus ----------------------------------------------------------------------------------

def test_streams_are_counted_and_in_flight_while_read(sim_factory: Any, endpoint: str) -> None:
    sim = sim_factory(answer_words=10, token_latency=0.01)
    ga.configure(prometheus=True)
    agent = at(SummaryAgent, sim.anthropic_url)
    before = scrape(endpoint)
    in_flight = []
    results = []
    for i in range(3):
        stream = agent.stream(text=f"t{i}")
        for _ in stream:
            in_flight.append(total(scrape(endpoint), "greenagents_calls_in_flight"))
            break
        stream.close()
        results.append(stream.result)
        whole = agent.stream(text=f"w{i}")
        results.append(whole.result)
    after = scrape(endpoint)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    target, model = "tests.agents.SummaryAgent", "anthropic/claude-haiku-4-5"
    assert in_flight == [1, 1, 1] and total(after, "greenagents_calls_in_flight") == 0
    assert grew("greenagents_calls_total", target=target, outcome="ok") == 3
    assert grew("greenagents_calls_total", target=target, error_type="StreamClosed") == 3
    assert grew("greenagents_attempts_total", model=model) == 6
    assert grew("greenagents_tokens_total", model=model, direction="output") == sum(
        r.usage.completion_tokens for r in results if r.usage)
    assert grew("greenagents_cost_usd_total", model=model) == pytest.approx(
        sum(r.cost_usd or 0 for r in results))


# --- the execution log ---------------------------------------------------------------------------

def test_a_streamed_tool_agent_is_logged_with_its_turns(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    stream = tool_agent(sim, get_weather, get_time).stream("Oslo")
    assert stream.result.ok
    tracking.flush()
    connection = sqlite3.connect(db)
    status, history = connection.execute("SELECT status, history FROM calls").fetchone()
    connection.close()
    assert status == "ok"
    assert [(e.get("turn"), e.get("tool")) for e in json.loads(history)] == [
        (1, None), (1, "get_weather"), (1, "get_time"), (2, None)]


# --- budgets -------------------------------------------------------------------------------------

def test_a_budget_refuses_a_stream_before_sending(sim: Simulator) -> None:
    with ga.budget("stream-tenant", max_cost_usd=1e-9):
        stream = at(SentimentAgent, sim.base_url, fallbacks=(
            ("anthropic/claude-haiku-4-5", sim.anthropic_url),)).stream(text="x")
    with pytest.raises(errors.BudgetExceeded, match="was not sent"):
        list(stream)  # the budget was active where the stream was made
    assert isinstance(stream.result.error, errors.BudgetExceeded)
    assert stream.result.attempts == 1, "not retried, no fallback tried"
    assert sim.stats()["requests"] == 0


def test_a_stream_spends_from_the_budgets_it_runs_under(sim: Simulator) -> None:
    agent = at(SummaryAgent, sim.anthropic_url, max_tokens=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", budgets.BudgetWarning)
        with ga.budget("stream-spend", max_cost_usd=1.0) as spend:
            whole = agent.stream(text="whole")
            cut = agent.stream(text="cut")
            assert "".join(whole) and next(iter(cut))
            cut.close()
    assert whole.result.cost_usd and cut.result.cost_usd
    assert spend.spent_usd == pytest.approx(whole.result.cost_usd + cut.result.cost_usd)


# --- the response cache --------------------------------------------------------------------------

def test_a_finished_stream_is_stored_and_a_hit_replays_as_a_stream(sim: Simulator,
                                                                  tmp_path: Path) -> None:
    ga.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    agent = at(SentimentAgent, sim.base_url, cache=True)
    first = agent.stream(text="I love it")
    deltas = list(first)
    assert len(deltas) > 1 and first.result.ok and not first.result.cached
    again = agent.stream(text="I love it")
    events = list(again.events())
    assert [type(e).__name__ for e in events] == ["TextDelta", "Done"]
    assert events[0].text == "".join(deltas)  # type: ignore[union-attr]
    hit = again.result
    assert hit.cached and hit.cost_usd == 0 and hit.attempts == 0 and hit.history == ()
    assert isinstance(hit.value, Sentiment) and hit.value == first.result.value
    assert hit.usage == first.result.usage and hit.model == first.result.model
    assert agent.call(text="I love it").cached, "a call finds what a stream stored"
    assert agent.call(text="other").ok and agent.stream(text="other").result.cached
    assert sim.stats()["requests"] == 2


def test_a_stream_cut_short_is_not_stored(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(answer_words=30, token_latency=0.01)
    ga.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    agent = at(SummaryAgent, sim.anthropic_url, cache=True)
    with agent.stream(text="x") as cut:
        next(iter(cut))
    assert not agent.stream(text="x").result.cached
    assert agent.stream(text="x").result.cached
    assert sim.stats()["requests"] == 2


def test_identical_streams_at_once_send_one_request(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(latency=0.3, answer_words=10, token_latency=0.01)
    ga.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    agent = at(SummaryAgent, sim.anthropic_url, cache=True)

    def read(_: int) -> str:
        return "".join(agent.stream(text="same"))

    texts = ga.each(range(50), read, max_concurrent=50)
    assert len({r.unwrap() for r in texts}) == 1 and sim.stats()["requests"] == 1


def test_a_cached_tool_agent_stream_runs_no_tools(sim: Simulator, tmp_path: Path) -> None:
    ran: list[str] = []

    def lookup(city: str) -> str:
        """Facts about a city."""
        ran.append(city)
        gevent.sleep(0)
        return "fine"

    ga.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    agent = tool_agent(sim, lookup, cache=True)
    assert agent.stream("Lima").result.ok and len(ran) == 1
    hit = agent.stream("Lima")
    assert [type(e).__name__ for e in hit.events()] == ["TextDelta", "Done"]
    assert hit.result.cached and len(ran) == 1


def test_an_identical_stream_read_by_the_same_greenlet_does_not_wait_for_itself(
        sim: Simulator, tmp_path: Path) -> None:
    ga.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    agent = at(SummaryAgent, sim.anthropic_url, cache=True)
    first = agent.stream(text="same")
    reading = iter(first)
    next(reading)  # in flight, led by this greenlet
    with gevent.Timeout(20):  # before: waited for `first`, which only this greenlet can read
        second = agent.stream(text="same")
        assert "".join(second) and not second.result.cached
    assert list(reading) and first.result.ok and agent.stream(text="same").result.cached


# --- limits learned from the provider's headers --------------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.sim(rpm=4)
def test_streams_learn_the_stated_limits_and_wait_instead_of_meeting_429s(
        sim: Simulator, provider: str) -> None:
    from greenagents import learned_limits
    from tests.test_learned_limits import agent_for, key_of, statuses

    agent = agent_for(sim, provider, retries=ga.Retry(max=3, deadline=2))
    assert all(agent.stream(text=f"t{n}").result.ok for n in range(4))
    assert learned_limits.learned(key_of(sim, provider))["requests"].limit == 4
    late = agent.stream(text="late")
    with pytest.raises(errors.Timeout, match="rate limit is spent"):
        list(late)
    assert statuses(sim) == {"200": 4}  # the fifth stream never went
