"""Tools from plain functions: the schema the model sees, and the validation its arguments pass."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
import pytest

import greenagents as ga
from greenagents.errors import ConfigError
from greenagents.tools import ToolArgumentsError, toolbox


class Leg(pydantic.BaseModel):
    origin: str
    destination: str


def plan(legs: list[Leg], travellers: Annotated[int, pydantic.Field(ge=1, description="People")],
         cabin: Literal["economy", "business"] = "economy",
         note: Annotated[str, "Anything the agent should know"] = "",
         ctx: ga.ToolContext | None = None) -> dict[str, Any]:
    """Price a multi-leg trip.

    Longer text stays in the description.
    """
    return {"legs": len(legs), "travellers": travellers, "cabin": cabin,
            "tenant": ctx.inputs.get("tenant") if ctx else None}


def test_schema_from_the_signature() -> None:
    schema = ga.tool(plan).parameters
    assert schema["required"] == ["legs", "travellers"]
    props = schema["properties"]
    assert props["cabin"]["enum"] == ["economy", "business"] and props["cabin"]["default"] == "economy"
    assert props["travellers"]["description"] == "People" and props["travellers"]["minimum"] == 1
    assert props["note"]["description"] == "Anything the agent should know"
    assert schema["$defs"]["Leg"]["required"] == ["origin", "destination"]
    assert "ctx" not in props  # the context is ours, not the model's
    assert schema["additionalProperties"] is False


def test_description_and_name() -> None:
    made = ga.tool(plan)
    assert made.name == "plan" and made.description.startswith("Price a multi-leg trip.\n\nLonger")
    renamed = ga.tool(plan, name="price_trip", description="Price it.")
    assert renamed.spec()["name"] == "price_trip" and renamed.spec()["description"] == "Price it."


def test_arguments_are_validated_and_coerced() -> None:
    made = ga.tool(plan)
    legs = [{"origin": "CDG", "destination": "JFK"}]
    out = made.invoke({"legs": legs, "travellers": "2"}, ga.ToolContext(inputs={"tenant": "t1"}))
    assert out == '{"legs":1,"travellers":2,"cabin":"economy","tenant":"t1"}'
    with pytest.raises(ToolArgumentsError, match=r"travellers: Input should be greater than or equal to 1"):
        made.invoke({"legs": legs, "travellers": 0}, None)
    with pytest.raises(ToolArgumentsError, match=r"legs.0.destination: Field required"):
        made.invoke('{"legs": [{"origin": "CDG"}], "travellers": 1}', None)
    with pytest.raises(ToolArgumentsError, match="travel: Extra inputs are not permitted"):
        made.invoke({"legs": legs, "travellers": 1, "travel": 1}, None)
    with pytest.raises(ToolArgumentsError, match="not valid JSON"):
        made.invoke("{legs:", None)


@pytest.mark.parametrize("raw", ["[1, 2]", '"legs"', "3", ["legs"]])
def test_arguments_that_are_not_an_object_say_so(raw: Any) -> None:
    with pytest.raises(ToolArgumentsError, match="must be a JSON object matching the tool's schema"):
        ga.tool(plan).invoke(raw, None)


def test_empty_arguments_are_an_empty_object() -> None:
    def now() -> str:
        """The time."""
        return "noon"

    assert ga.tool(now).invoke("", None) == "noon"
    with pytest.raises(ToolArgumentsError, match=r"legs: Field required"):
        ga.tool(plan).invoke("", None)


def test_methods_of_an_agent_bind_to_an_instance() -> None:
    class Shop(ga.Agent):
        currency = "EUR"

        def price(self, item: str) -> str:
            """Price of an item."""
            return f"{item}: 3 {self.currency}"

        tools = (price,)

    box = Shop._toolbox()
    assert "self" not in box.specs[0]["parameters"]["properties"]
    assert box.bound(Shop)["price"].invoke({"item": "tea"}, None) == "tea: 3 EUR"


def spread(*items: int) -> int:
    return len(items)


@pytest.mark.parametrize(("tools", "message"), [
    ((plan, plan), "two tools named 'plan'"),
    (plan, "must be a tuple of functions"),
    ((spread,), "takes \\*items"),
])
def test_definition_mistakes_name_the_fix(tools: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        toolbox(tools, "Agent")
    with pytest.raises(ConfigError, match="use letters, digits"):
        ga.tool(plan, name="no spaces")


def test_bad_loop_settings_are_the_calls_error(sim: Any) -> None:
    class Loopy(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = sim.base_url
        tools = (plan,)
        max_turns = 0

    result = Loopy.call("hi")
    assert isinstance(result.error, ConfigError) and "max_turns=0" in str(result.error)
    assert sim.stats()["requests"] == 0
