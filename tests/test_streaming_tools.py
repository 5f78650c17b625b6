"""Agent.stream on tool-using agents, against the simulator over real HTTP (and a real tool server):
tool turns read from the stream and run through the tool loop, the last turn's text streamed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import pytest

import greenagents as ga
from greenagents import errors
from greenagents.providers.streams import AnthropicReader, OpenAIReader
from greenagents.result import Attempt
from greenagents.sse import Event
from greenagents.streaming import Done, TextDelta, ToolFinished, ToolStarted
from greenagents.testing import Simulator, ToolServer
from tests.test_tool_loop import Trip, agent, http_tools

pytestmark = pytest.mark.usefixtures("http_transport")  # every test over urllib3 and geventhttpclient
PROVIDERS = ["openai", "anthropic"]


@pytest.fixture
def tools() -> Iterator[ToolServer]:
    with ToolServer(latency=0.3) as server:
        yield server


def kinds(events: list[Any]) -> list[str]:
    """Event kinds, runs of one kind collapsed: ['ToolStarted', 'ToolFinished', 'TextDelta', ...]."""
    out: list[str] = []
    for event in events:
        if not out or out[-1] != type(event).__name__:
            out.append(type(event).__name__)
    return out


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_turn_of_parallel_tool_calls_then_the_answer_streams(
        sim: Simulator, tools: ToolServer, provider: str) -> None:
    travel = agent(sim, *http_tools(tools), provider=provider)
    stream = travel.stream("Paris in May")
    events = list(stream.events())
    assert kinds(events) == ["ToolStarted", "ToolFinished", "TextDelta", "Done"]
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    names = ["get_weather", "search_flights", "find_hotels"]
    assert [e.name for e in started] == names and all(e.turn == 1 for e in started)
    assert sorted(e.id for e in finished) == sorted(e.id for e in started)  # as each ended
    assert all(e.call.ok and e.call.turn == 1 and e.call.output for e in finished)
    assert tools.stats()["peak"] == 3  # the turn's three calls were in flight together
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3 and all(e.turn == 2 for e in deltas)
    result = stream.result
    assert isinstance(events[-1], Done) and events[-1].result is result
    assert result.ok, result.error
    assert result.value == "".join(e.text for e in deltas) == stream.text
    assert "21 °C, sunny" in result.value and result.turns == 2
    called = travel.call("Paris in May")  # the same answer, usage and history as a call's
    assert called.value == result.value and called.usage == result.usage
    assert [type(h).__name__ for h in called.history] == [type(h).__name__ for h in result.history]
    assert sim.stats()["requests"] == 4


@pytest.mark.parametrize("provider", PROVIDERS)
def test_iterating_gives_only_the_answers_text(sim: Simulator, provider: str) -> None:
    def lookup(city: str) -> str:
        """Facts about a city."""
        return f"{city} is lovely"

    stream = agent(sim, lookup, provider=provider).stream("Rome")
    deltas = list(stream)
    assert all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas) == stream.result.value and "is lovely" in stream.result.value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_structured_output_after_tools_streams_its_json(
        sim: Simulator, tools: ToolServer, provider: str) -> None:
    stream = agent(sim, *http_tools(tools), provider=provider, output=Trip).stream("Rome")
    partials = list(stream.partial())
    result = stream.result
    assert result.ok, result.error
    assert isinstance(result.value, Trip) and partials[-1] == result.value.model_dump()
    assert Trip.model_validate_json(stream.text) == result.value  # only the answer's JSON streamed
    assert len(result.tool_calls) == 3
    # Anthropic asks for the output in a turn of its own: the working turn's text is not streamed
    assert result.turns == (3 if provider == "anthropic" else 2)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_failing_tool_goes_back_to_the_model_and_shows_in_the_events(
        sim: Simulator, provider: str) -> None:
    def flaky(city: str) -> str:
        """Always fails."""
        raise RuntimeError("backend down")

    stream = agent(sim, flaky, provider=provider).stream("Oslo")
    events = list(stream.events())
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert len(finished) == 1 and not finished[0].call.ok
    assert "RuntimeError: backend down" in (finished[0].call.error or "")
    result = stream.result
    assert result.ok and result.tool_errors == 1 and "backend down" in result.value


def test_each_tool_finished_arrives_as_its_tool_ends(sim: Simulator) -> None:
    ended: list[str] = []

    def quick(city: str) -> str:
        """Quick facts about a city."""
        time.sleep(0.2)
        ended.append("quick")
        return "small"

    def slow(city: str) -> str:
        """Slow facts about a city."""
        time.sleep(1.5)
        ended.append("slow")
        return "big"

    seen: list[tuple[str, list[str]]] = []  # each ToolFinished, and which tools had ended then
    for event in agent(sim, quick, slow).stream("Oslo").events():
        if isinstance(event, ToolFinished):
            seen.append((event.call.tool, list(ended)))
    assert seen == [("quick", ["quick"]), ("slow", ["quick", "slow"])]  # not both at the end


def test_close_from_another_greenlet_while_tools_run_ends_them(sim: Simulator) -> None:
    ended: list[str] = []

    def stuck(city: str) -> str:
        """Takes forever."""
        try:
            time.sleep(30)
        finally:
            ended.append("stuck")
        return "never"

    stream = agent(sim, stuck).stream("Oslo")
    started = gevent.event.Event()

    def read() -> None:
        for event in stream.events():
            if isinstance(event, ToolStarted):
                started.set()

    reader = gevent.spawn(read)
    started.wait(10)
    gevent.sleep(0.05)  # the tool is running
    stream.close()
    with pytest.raises(errors.StreamClosed):
        reader.get(timeout=5)
    gevent.sleep(0.05)
    assert ended == ["stuck"]  # killed with the stream, not left running 30 s
    assert isinstance(stream.result.error, errors.StreamClosed)


def test_tool_errors_raise_ends_the_stream_with_the_tool_error(sim: Simulator) -> None:
    def broken(city: str) -> str:
        """Always fails."""
        raise ValueError("nope")

    stream = agent(sim, broken, tool_errors="raise").stream("Oslo")
    with pytest.raises(errors.ToolError, match="nope"):
        list(stream)
    assert isinstance(stream.result.error, errors.ToolError) and stream.text == ""


@pytest.mark.sim(faults={"tool_loop": 1.0})
def test_max_turns_ends_a_streamed_loop(sim: Simulator) -> None:
    def ping(n: int) -> str:
        """Ping."""
        return "pong"

    stream = agent(sim, ping, max_turns=3).stream("go")
    with pytest.raises(errors.ToolLoopError, match="max_turns=3"):
        list(stream)
    assert stream.result.turns == 3 and len(stream.result.tool_calls) == 2


@pytest.mark.sim(faults={"truncated": 1.0}, fault_attempts=1)
def test_a_tool_turn_cut_short_is_retried_but_a_cut_answer_is_not(sim: Simulator) -> None:
    def lookup(city: str) -> str:
        """Facts about a city."""
        return "fine"

    stream = agent(sim, lookup, retries=ga.Retry(max=2, base=0.01)).stream("Lima")
    received: list[str] = []
    with pytest.raises(errors.ConnectionFailed, match="broke mid-request"):
        for delta in stream:
            received.append(delta)
    result = stream.result
    # turn 1 (tool calls, nothing shown yet) was retried; turn 2 broke after deltas: raised
    assert [(a.turn, a.error) for a in result.history if isinstance(a, Attempt)] == [
        (1, "ConnectionFailed"), (1, None), (2, "ConnectionFailed")]
    assert len(result.tool_calls) == 1 and received and sim.stats()["requests"] == 3


def test_leaving_the_loop_during_a_tool_agents_answer_cancels_it(sim_factory: Any) -> None:
    sim = sim_factory(answer_words=50, token_latency=0.02)

    def lookup(city: str) -> str:
        """Facts about a city."""
        return "fine"

    stream = agent(sim, lookup, provider="anthropic").stream("Lima")
    for count, _ in enumerate(stream, 1):
        if count == 2:
            break
    assert isinstance(stream.result.error, errors.StreamClosed)
    assert stream.result.turns == 2 and len(stream.result.tool_calls) == 1


def test_readers_collect_openai_tool_calls_from_their_pieces() -> None:
    reader = OpenAIReader(tools=True)
    chunks = [
        {"choices": [{"delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function",
             "function": {"name": "weather", "arguments": ""}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function",
             "function": {"name": "time", "arguments": "{}"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"P"}'}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
    ]
    assert [reader.feed(Event(None, json.dumps(c).encode())) for c in chunks] == [""] * 5
    calls = reader.completion(0).tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_a", "weather", '{"city":"P"}'), ("call_b", "time", "{}")]
    assert reader.completion(0).text == "" and reader.finish_reason == "tool_calls"


def test_readers_collect_anthropic_tool_use_blocks_and_keep_the_output_tool_as_text() -> None:
    events = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hm."}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_2", "name": "clock", "input": {}}},
        {"type": "content_block_start", "index": 3,
         "content_block": {"type": "tool_use", "id": "toolu_3", "name": "output", "input": {}}},
        {"type": "content_block_delta", "index": 3,
         "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}},
    ]
    reader = AnthropicReader(tools=True, answer_tool="output")
    texts = [reader.feed(Event(None, json.dumps(e).encode())) for e in events]
    assert "".join(texts) == 'Hm.{"a": 1}'  # the forced output tool's input is the answer
    calls = reader.completion(0).tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("toolu_1", "weather", {"city": "Paris"}), ("toolu_2", "clock", {})]
    plain = AnthropicReader()  # no tools offered: a tool's input is the (structured) answer
    assert "".join(plain.feed(Event(None, json.dumps(e).encode())) for e in events[2:5]) == \
        '{"city": "Paris"}'


def test_the_openai_reader_takes_usage_from_a_last_chunk_that_also_has_text() -> None:
    """Some compatible servers (vLLM) send the last piece, the finish reason and the usage at
    once: the fast path for text must still read them."""
    reader = OpenAIReader()
    for chunk in ({"model": "m", "choices": [{"delta": {"content": "Hel"}}]},
                  {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 7, "completion_tokens": 2}}):
        reader.feed(Event(None, json.dumps(chunk).encode()))
    completion = reader.completion(0)
    assert (completion.text, completion.model, completion.finish_reason) == ("Hello", "m", "stop")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 2)
