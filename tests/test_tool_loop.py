"""Tool-using agents end to end: real HTTP over 127.0.0.1 to the simulator and to a tool server.

The test process is monkey-patched, so the tools below use plain ``requests`` and still wait
together; the tool server counts the requests in flight, which is how concurrency is asserted.
"""

from __future__ import annotations

import contextvars
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest
import requests

import greenagents as ga
from greenagents import errors, tracking
from greenagents.testing import Simulator, ToolServer
from tests.conftest import run_python

SESSION = requests.Session()
SESSION.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=4000))
TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")


@pytest.fixture
def tools() -> Iterator[ToolServer]:
    with ToolServer(latency=0.3) as server:
        yield server


class Trip(pydantic.BaseModel):
    summary: str
    days: int = pydantic.Field(ge=1, le=14)


def agent(sim: Simulator, *functions: Any, provider: str = "openai",
          **attributes: Any) -> type[ga.Agent]:
    """An agent on ``provider`` at ``sim`` offering ``functions``."""
    url = sim.base_url if provider == "openai" else sim.anthropic_url
    model = "openai/gpt-4o-mini" if provider == "openai" else "anthropic/claude-haiku-4-5"
    return type("TravelAgent", (ga.Agent,), {"model": model, "base_url": url, "tools": functions,
                                              "instructions": "Plan a trip.", **attributes})


def http_tools(server: ToolServer) -> tuple[Any, ...]:
    """Three tools, each one blocking HTTP request to the tool server through ``requests``."""

    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        """Current weather for a city."""
        return SESSION.get(f"{server.url}/weather/{city}", params={"unit": unit}, timeout=30).text

    def search_flights(origin: str, destination: str) -> Any:
        """Flights between two cities."""
        return SESSION.get(f"{server.url}/flights", params={"from": origin, "to": destination},
                           timeout=30).json()

    def find_hotels(city: str, nights: int = 1) -> Any:
        """Hotels in a city."""
        return SESSION.get(f"{server.url}/hotels", params={"city": city}, timeout=30).json()

    return get_weather, search_flights, find_hotels


# --- the loop on both providers ------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_one_turn_calls_several_tools_together_and_their_output_reaches_the_model(
        sim: Simulator, tools: ToolServer, provider: str) -> None:
    result = agent(sim, *http_tools(tools), provider=provider).call("Paris in May")
    assert result.ok, result.error
    assert tools.stats()["peak"] == 3  # the three calls of the turn were in flight together
    assert [c.tool for c in result.tool_calls] == ["get_weather", "search_flights", "find_hotels"]
    assert all(c.ok and c.turn == 1 for c in result.tool_calls)
    assert "21 °C, sunny" in result.value and "'path':'/flights'" in result.value
    assert result.turns == 2 and result.attempts == 2 and result.tool_errors == 0
    first, second = (e for e in result.history if isinstance(e, ga.Attempt))
    assert (first.turn, second.turn) == (1, 2)
    assert result.usage is not None and result.usage.prompt_tokens > 0
    assert result.cost_usd is not None and result.cost_usd > 0  # summed over both turns


def test_every_turn_goes_over_the_chosen_transport(sim: Simulator, tools: ToolServer,
                                                   http_transport: str) -> None:
    """The second turn (a larger body, with the tool results) takes the same transport as the
    first: the other transport never opens a pool to the simulator."""
    from greenagents import http, state, transport

    result = agent(sim, *http_tools(tools)).call("Paris")
    assert result.ok and result.turns == 2, result.error
    parts = state.current()
    gevent_origins = set(parts.part(transport.GeventPools).by_origin)
    urllib3_origins = set(parts.part(http.Pools).by_origin)
    used, unused = ((gevent_origins, urllib3_origins) if http_transport == "geventhttpclient"
                    else (urllib3_origins, gevent_origins))
    assert len(used) == 1 and unused == set()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_structured_output_after_tools(sim: Simulator, tools: ToolServer, provider: str) -> None:
    result = agent(sim, *http_tools(tools), provider=provider, output=Trip).call("Rome")
    assert isinstance(result.value, Trip), result.error
    assert len(result.tool_calls) == 3
    # Anthropic cannot offer tools and force the output tool at once: one more turn asks for it
    assert result.turns == (2 if provider == "openai" else 3)


def test_usage_sums_over_turns(sim: Simulator, tools: ToolServer) -> None:
    plain = agent(sim).call("Paris")
    with_tools = agent(sim, *http_tools(tools)).call("Paris")
    assert with_tools.usage is not None and plain.usage is not None
    assert with_tools.usage.total_tokens > 2 * plain.usage.total_tokens


def test_a_method_of_the_agent_is_a_tool(sim: Simulator) -> None:
    class Desk(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = sim.base_url
        greeting = "bonjour"

        def greet(self, name: str) -> str:
            """Greet someone."""
            return f"{self.greeting}-tool-output"

        tools = (greet,)

    assert "bonjour-tool-output" in Desk.run("hi")


# --- concurrency ---------------------------------------------------------------------------------

def test_tool_concurrency_bounds_one_turn(sim: Simulator, tools: ToolServer) -> None:
    def echo(n: int) -> str:
        """Echo."""
        return SESSION.get(f"{tools.url}/echo", params={"n": n}, timeout=30).text

    four = tuple(ga.tool(echo, name=f"echo_{i}") for i in range(4))
    result = agent(sim, *four, tool_concurrency=2).call("go")
    assert result.ok and len(result.tool_calls) == 4
    assert tools.stats()["peak"] == 2


def test_thousands_of_tool_calls_in_flight_across_a_batch(sim: Simulator) -> None:
    # 5 s per tool request: long enough that every agent's first turn is back (even on a loaded
    # machine) before the first tool requests finish, so they are all in flight together
    with ToolServer(latency=5.0).start_process() as server:
        travel = agent(sim, *http_tools(server))  # type: ignore[arg-type]
        started = time.monotonic()
        results = ga.batch([(travel, {"input": f"trip {i}"}) for i in range(600)],
                           max_concurrent=600)
        elapsed = time.monotonic() - started
        assert all(r.ok for r in results), next(r.error for r in results if not r.ok)
        stats = server.stats()
    assert stats["requests"] == 1800
    assert stats["peak"] >= 1000, stats  # one by one would be 1; one agent at a time, 3
    assert elapsed < 120  # 1,800 calls of 5 s one after another would take 9,000 s


def test_contextvars_and_tool_context_reach_tools(sim: Simulator) -> None:
    def whoami(ctx: ga.ToolContext) -> str:
        """Who is asking."""
        return f"tenant={TENANT.get()} input={ctx.inputs['input']} turn={ctx.turn}"

    travel = agent(sim, whoami)
    token = TENANT.set("acme")
    try:
        results = ga.batch([(travel, {"input": "alpha"})])
    finally:
        TENANT.reset(token)
    assert "tenant=acme input=alpha turn=1" in results[0].unwrap()


def test_tools_run_in_threads_when_not_patched() -> None:
    done = run_python("""
        import time, warnings
        warnings.simplefilter("ignore")
        import greenagents as ga
        from greenagents.testing import Simulator

        def slow(n: int) -> str:
            '''Sleep.'''
            time.sleep(0.5)
            return "slept"

        with Simulator() as sim:
            class A(ga.Agent):
                model = "openai/gpt-4o-mini"
                base_url = sim.base_url
                tools = tuple(ga.tool(slow, name=f"slow_{i}") for i in range(4))
            started = time.monotonic()
            result = A.call("go")
            print(result.ok, len(result.tool_calls), ga.is_patched(),
                  time.monotonic() - started < 1.5)
    """)
    assert done.stdout.split() == ["True", "4", "False", "True"], done.stderr


# --- faults --------------------------------------------------------------------------------------

def boom(city: str) -> str:
    """Always fails."""
    raise ValueError(f"no weather for {city}")


def test_a_raising_tool_is_an_error_result_the_model_sees(sim: Simulator) -> None:
    result = agent(sim, boom).call("x")
    assert result.ok and "the tool raised ValueError: no weather for" in result.value
    assert result.tool_errors == 1 and "ValueError" in (result.tool_calls[0].error or "")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_failed_tool_reaches_anthropic_as_is_error(sim: Simulator, provider: str) -> None:
    def fine(city: str) -> str:
        """Always works."""
        return f"fine in {city}"

    result = agent(sim, boom, fine, provider=provider).call("x")
    assert result.ok and result.tool_errors == 1
    flagged = "[is_error] Error: the tool raised ValueError"  # how the simulator quotes it
    assert (flagged in result.value) == (provider == "anthropic"), result.value
    assert "Error: the tool raised ValueError" in result.value
    assert "[is_error] fine in" not in result.value


def test_tool_errors_raise_policy_fails_the_call(sim: Simulator) -> None:
    result = agent(sim, boom, tool_errors="raise").call("x")
    assert isinstance(result.error, errors.ToolError) and result.error.tool == "boom"
    assert isinstance(result.error.__cause__, ValueError)
    assert "tool 'boom' failed on turn 1" in str(result.error)


def test_a_slow_tool_times_out_and_the_call_goes_on(sim: Simulator) -> None:
    def stuck(n: int) -> str:
        """Never answers in time."""
        time.sleep(30)
        return "late"

    started = time.monotonic()
    result = agent(sim, stuck, tool_timeout=0.2).call("x")
    assert time.monotonic() - started < 10
    assert result.ok and "did not finish within tool_timeout=0.2s" in result.value
    assert result.tool_errors == 1


def test_a_call_stopped_while_its_tools_run_stops_them(sim: Simulator) -> None:
    ended: list[str] = []

    def slow(n: int) -> str:
        """Takes long."""
        try:
            time.sleep(5)
        except BaseException as exc:
            ended.append(type(exc).__name__)
            raise
        ended.append("finished")
        return "late"

    result = ga.batch([(agent(sim, slow), {"input": "x"})], timeout=0.5, warn_failures=False)[0]
    assert isinstance(result.error, errors.Timeout)
    time.sleep(0.2)  # the kill reaches the tool's greenlet at its next switch
    assert ended == ["GreenletExit"]


@pytest.mark.sim(faults={"schema_invalid": 1.0})
def test_invalid_arguments_go_back_to_the_model(sim: Simulator) -> None:
    ran: list[str] = []

    def strict(city: str, days: int) -> str:
        """Needs both."""
        ran.append(city)
        return "ok"

    result = agent(sim, strict).call("x")
    assert result.ok and not ran  # the function never ran with bad arguments
    assert "invalid arguments" in result.value and "Field required" in result.value
    assert result.tool_errors == 1


@pytest.mark.sim(faults={"tool_unknown": 1.0})
def test_an_unknown_tool_is_an_error_result_not_a_crash(sim: Simulator, tools: ToolServer) -> None:
    result = agent(sim, *http_tools(tools)).call("x")
    assert result.ok and "there is no tool named 'no_such_tool'" in result.value
    assert result.tool_errors == 1 and len(result.tool_calls) == 3


@pytest.mark.sim(faults={"tool_loop": 1.0})
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_max_turns_ends_a_loop_that_never_finishes(sim: Simulator, provider: str) -> None:
    result = agent(sim, boom, provider=provider, max_turns=3).call("x")
    assert isinstance(result.error, errors.ToolLoopError)
    assert "asked for tools (boom) after max_turns=3 turns" in str(result.error)
    assert result.turns == 3 and len(result.tool_calls) == 2  # the third turn's are not run


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=0.05)
def test_each_turn_is_retried_with_the_retry_policy(sim: Simulator) -> None:
    result = agent(sim, boom, retries=ga.Retry(max=2, base=0.01)).call("x")
    assert result.ok and result.turns == 2
    attempts = [e for e in result.history if isinstance(e, ga.Attempt)]
    assert [(a.turn, a.status) for a in attempts] == [(1, 429), (1, None), (2, 429), (2, None)]


# --- the execution log ---------------------------------------------------------------------------

SECRET = "sk-live-abcdefghijklmnop0123"


def test_the_log_shows_turns_and_tool_calls_with_secrets_redacted(
        sim: Simulator, tmp_path: Path) -> None:
    def login(key: Literal["sk-live-abcdefghijklmnop0123"]) -> str:
        """Log in (the model 'knows' the key: the simulator sends the only allowed value)."""
        return f"logged in with {key}; " + "x" * 5000

    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}", tracking_payloads=True)
    result = agent(sim, login).call("x")
    assert result.ok and SECRET not in repr(result.history)
    tracking.flush()
    row = sqlite3.connect(db).execute("SELECT history FROM calls").fetchone()[0]
    assert SECRET not in row and "sk-***" in row
    history = json.loads(row)
    assert [e.get("turn") for e in history] == [1, 1, 2]
    call = history[1]
    assert call["tool"] == "login" and call["error"] is None and len(call["output"]) < 2100


def test_tool_payloads_stay_out_of_the_log_unless_asked(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    assert agent(sim, boom).call("x").ok
    tracking.flush()
    call = json.loads(sqlite3.connect(db).execute("SELECT history FROM calls").fetchone()[0])[1]
    assert call["tool"] == "boom" and call["arguments"] is None and call["output"] is None
    assert "ValueError" in call["error"]  # what happened is still there


# --- wire translation ----------------------------------------------------------------------------

def test_providers_translate_the_loop_messages() -> None:
    from greenagents.providers import AnthropicProvider, OpenAIProvider

    spec = ga.tool(boom).spec()
    calls = [{"id": f"c{i}", "type": "function",
              "function": {"name": "boom", "arguments": f'{{"city": "c{i}"}}'}} for i in (1, 2)]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Plan."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "user", "content": "Now answer."}]
    body = AnthropicProvider().build("claude-haiku-4-5", messages, tools=[spec]).body
    assert body["system"] == "Plan." and [m["role"] for m in body["messages"]] == [
        "user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "boom", "input": {"city": "c1"}},
        {"type": "tool_use", "id": "c2", "name": "boom", "input": {"city": "c2"}}]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
        {"type": "text", "text": "Now answer."}]
    assert body["tools"] == [{"name": "boom", "description": "Always fails.",
                              "input_schema": spec["parameters"]}] and "tool_choice" not in body
    forced = AnthropicProvider().build("m", messages, tools=[spec], schema={"type": "object"}).body
    assert [t["name"] for t in forced["tools"]] == ["boom", "output"]
    assert forced["tool_choice"] == {"type": "tool", "name": "output"}
    openai_body = OpenAIProvider().build("gpt-4o-mini", messages, tools=[spec]).body
    assert openai_body["messages"] == messages
    assert openai_body["tools"] == [{"type": "function", "function": spec}]


def test_results_with_tool_calls_cross_celery() -> None:
    pytest.importorskip("celery")
    from greenagents.celery.wire import from_json, to_json

    history = (ga.Attempt(1, turn=1), ga.ToolCall(1, "boom", "{}", error="raised"),
               ga.Attempt(2, turn=2))
    back = from_json(json.loads(json.dumps(to_json(ga.Result(value="x", history=history)))))
    assert back.history == history and back.tool_errors == 1
