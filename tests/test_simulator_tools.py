"""The simulator's tool calls, driven by the official SDKs over real HTTP on 127.0.0.1.

When tools are offered and no tool results came back yet, the simulated model calls every offered
tool in one turn with arguments valid against each schema; given tool results, it answers quoting
them. Faults make it call an unknown tool, break the arguments, or never stop calling tools.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import anthropic
import openai
import pydantic
import pytest

from greenagents.testing import Simulator
from greenagents.testing.answers import UNKNOWN_TOOL


class Weather(pydantic.BaseModel):
    city: str
    unit: Literal["C", "F"] = "C"


class Flights(pydantic.BaseModel):
    origin: str
    destination: str
    passengers: int = pydantic.Field(ge=1, le=9)


USER: Any = [{"role": "user", "content": "Plan a trip to Paris"}]
OPENAI_TOOLS: Any = [openai.pydantic_function_tool(Weather, name="get_weather"),
                     openai.pydantic_function_tool(Flights, name="search_flights")]
CLAUDE_TOOLS: Any = [{"name": "get_weather", "description": "Weather.",
                      "input_schema": Weather.model_json_schema()},
                     {"name": "search_flights", "description": "Flights.",
                      "input_schema": Flights.model_json_schema()}]
MODELS = {"get_weather": Weather, "search_flights": Flights}


def oai(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)


def claude(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_url, api_key="sk-test", max_retries=0)


def test_openai_calls_every_offered_tool_in_one_turn(sim: Simulator) -> None:
    completion = oai(sim).chat.completions.create(model="gpt-4o", messages=USER, tools=OPENAI_TOOLS)
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "search_flights"]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2
    for call in calls:
        MODELS[call.function.name].model_validate_json(call.function.arguments)  # type: ignore[union-attr]


def test_openai_parse_accepts_parallel_calls(sim: Simulator) -> None:
    tools: Any = [openai.pydantic_function_tool(Weather, name="get_weather"),
                  openai.pydantic_function_tool(Flights, name="search_flights")]
    completion = oai(sim).chat.completions.parse(model="gpt-4o", messages=USER, tools=tools)
    parsed = [c.function.parsed_arguments for c in completion.choices[0].message.tool_calls or []]
    assert isinstance(parsed[0], Weather) and isinstance(parsed[1], Flights)


def test_openai_answer_quotes_the_tool_results(sim: Simulator) -> None:
    first = oai(sim).chat.completions.create(model="gpt-4o", messages=USER, tools=OPENAI_TOOLS)
    message = first.choices[0].message
    results = [{"role": "tool", "tool_call_id": c.id, "content": f"result-{i} from tool"}
               for i, c in enumerate(message.tool_calls or [])]
    history: Any = [*USER, message.model_dump(exclude_none=True), *results]
    second = oai(sim).chat.completions.create(model="gpt-4o", messages=history, tools=OPENAI_TOOLS)
    text = second.choices[0].message.content or ""
    assert "result-0 from tool" in text and "result-1 from tool" in text
    assert not second.choices[0].message.tool_calls


def test_openai_stream_of_several_tool_calls(sim: Simulator) -> None:
    with oai(sim).chat.completions.stream(model="gpt-4o", messages=USER,
                                          tools=OPENAI_TOOLS) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [type(c.function.parsed_arguments) for c in calls] == [Weather, Flights]


def test_answers_are_deterministic_per_seed(sim_factory: Any) -> None:
    def arguments(sim: Simulator) -> list[str]:
        completion = oai(sim).chat.completions.create(model="gpt-4o", messages=USER,
                                                      tools=OPENAI_TOOLS)
        return [c.function.arguments for c in completion.choices[0].message.tool_calls or []]  # type: ignore[union-attr]

    one, again, other = sim_factory(seed=1), sim_factory(seed=1), sim_factory(seed=2)
    assert arguments(one) == arguments(again) != arguments(other)


def test_anthropic_calls_every_offered_tool_in_one_turn(sim: Simulator) -> None:
    message = claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=200,
                                          messages=USER, tools=CLAUDE_TOOLS)
    blocks = [b for b in message.content if b.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert [b.name for b in blocks] == ["get_weather", "search_flights"]
    for block in blocks:
        MODELS[block.name].model_validate(block.input)


def claude_after_tools(sim: Simulator, results: Callable[[list[Any]], Any]) -> tuple[Any, Any]:
    """Ask with tools, answer the tool_use blocks with ``results(blocks)``: (history, answer)."""
    first = claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=200, messages=USER,
                                        tools=CLAUDE_TOOLS)
    blocks = [b for b in first.content if b.type == "tool_use"]
    history: Any = [*USER, {"role": "assistant", "content": first.content},
                    {"role": "user", "content": results(blocks)}]
    second = claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=200,
                                         messages=history, tools=CLAUDE_TOOLS)
    return history, second


def test_anthropic_answer_quotes_the_tool_results(sim: Simulator) -> None:
    _, second = claude_after_tools(sim, lambda blocks: [
        {"type": "tool_result", "tool_use_id": b.id, "content": f"out-{b.name}"} for b in blocks])
    text = "".join(b.text for b in second.content if b.type == "text")
    assert "out-get_weather" in text and "out-search_flights" in text
    assert second.stop_reason == "end_turn"


def test_anthropic_tool_result_is_error_is_accepted_and_echoed(sim: Simulator) -> None:
    history, second = claude_after_tools(sim, lambda blocks: [
        {"type": "tool_result", "tool_use_id": blocks[0].id, "content": "ok-weather"},
        {"type": "tool_result", "tool_use_id": blocks[1].id, "content": "no flights",
         "is_error": True}])
    text = "".join(b.text for b in second.content if b.type == "text")
    assert '"ok-weather"' in text and '"[is_error] no flights"' in text
    history[-1]["content"][1]["is_error"] = "yes"
    with pytest.raises(anthropic.BadRequestError, match="is_error"):
        claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=200, messages=history,
                                    tools=CLAUDE_TOOLS)


def test_anthropic_stream_of_several_tool_calls(sim: Simulator) -> None:
    with claude(sim).messages.stream(model="claude-haiku-4-5", max_tokens=200, messages=USER,
                                     tools=CLAUDE_TOOLS) as stream:
        message = stream.get_final_message()
    inputs = {b.name: b.input for b in message.content if b.type == "tool_use"}
    Weather.model_validate(inputs["get_weather"])
    Flights.model_validate(inputs["search_flights"])


@pytest.mark.sim(faults={"tool_unknown": 1.0})
def test_tool_unknown_fault(sim: Simulator) -> None:
    completion = oai(sim).chat.completions.create(model="gpt-4o", messages=USER, tools=OPENAI_TOOLS)
    names = [c.function.name for c in completion.choices[0].message.tool_calls or []]  # type: ignore[union-attr]
    assert names == [UNKNOWN_TOOL, "search_flights"]
    message = claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=200,
                                          messages=USER, tools=CLAUDE_TOOLS)
    assert message.content[0].type == "tool_use" and message.content[0].name == UNKNOWN_TOOL


@pytest.mark.sim(faults={"schema_invalid": 1.0})
def test_schema_invalid_fault_breaks_tool_arguments(sim: Simulator) -> None:
    completion = oai(sim).chat.completions.create(model="gpt-4o", messages=USER, tools=OPENAI_TOOLS)
    for call in completion.choices[0].message.tool_calls or []:
        with pytest.raises(pydantic.ValidationError):
            MODELS[call.function.name].model_validate_json(call.function.arguments)  # type: ignore[union-attr]


@pytest.mark.sim(faults={"tool_loop": 1.0})
def test_tool_loop_fault_keeps_calling_tools(sim: Simulator) -> None:
    first = oai(sim).chat.completions.create(model="gpt-4o", messages=USER, tools=OPENAI_TOOLS)
    message = first.choices[0].message
    results = [{"role": "tool", "tool_call_id": c.id, "content": "done"}
               for c in message.tool_calls or []]
    history: Any = [*USER, message.model_dump(exclude_none=True), *results]
    second = oai(sim).chat.completions.create(model="gpt-4o", messages=history, tools=OPENAI_TOOLS)
    assert second.choices[0].finish_reason == "tool_calls"


def test_a_forced_tool_is_called_alone(sim: Simulator) -> None:
    completion = oai(sim).chat.completions.create(
        model="gpt-4o", messages=USER, tools=OPENAI_TOOLS,
        tool_choice={"type": "function", "function": {"name": "search_flights"}})
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["search_flights"]  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments)["passengers"] in range(1, 10)  # type: ignore[union-attr]
