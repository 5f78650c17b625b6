"""The simulator speaks what peers speak: Responses API, embeddings, token counts, prompted formats.

Each is checked with the official SDKs over real HTTP, as the peers' own code would call it.
"""

from __future__ import annotations

import json
import math

import anthropic
import openai
import pytest
import requests
from pydantic import BaseModel

from greenagents.testing import Simulator

WEATHER = {"type": "function", "name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def _client(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)


class Person(BaseModel):
    name: str
    age: int


def test_responses_create_parse_and_tools(sim: Simulator) -> None:
    client = _client(sim)
    answer = client.responses.create(model="gpt-4o-mini", input="hello there", instructions="brief")
    assert answer.status == "completed" and 'You said: "hello there"' in answer.output_text
    assert answer.usage is not None and answer.usage.output_tokens > 0
    parsed = client.responses.parse(model="gpt-4o-mini", input="a person", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)
    called = client.responses.create(model="gpt-4o-mini", input="weather?", tools=[WEATHER],  # type: ignore[list-item]
                                     tool_choice="required")
    call = called.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    cut = client.responses.create(model="gpt-4o-mini", input="x " * 100, max_output_tokens=3)
    assert cut.status == "incomplete"


def test_responses_streaming_events(sim: Simulator) -> None:
    client = _client(sim)
    events = list(client.responses.create(model="gpt-4o-mini", input="stream it", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text  # type: ignore[union-attr]
    with client.responses.stream(model="gpt-4o-mini", input="weather?", tools=[WEATHER],  # type: ignore[list-item]
                                 tool_choice="required") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments)


def test_embeddings_are_deterministic_unit_vectors(sim: Simulator) -> None:
    client = _client(sim)
    first = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # base64
    again = client.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float")
    assert len(first.data) == 2 and len(first.data[0].embedding) == 1536
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding, abs=1e-6)
    assert first.data[0].embedding != first.data[1].embedding
    short = client.embeddings.create(model="text-embedding-3-large", input="a", dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert math.isclose(sum(x * x for x in short.data[0].embedding), 1.0, rel_tol=1e-5)
    assert len(client.embeddings.create(model="text-embedding-3-large", input="a").data[0].embedding) == 3072
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="text-embedding-3-small", input="a", dimensions=0)
    refused = requests.get(f"{sim.base_url}/embeddings", timeout=10)
    assert refused.status_code == 405 and refused.headers["Allow"] == "POST"


@pytest.mark.sim(api_key="sk-right")
def test_anthropic_count_tokens_and_auth(sim: Simulator) -> None:
    client = anthropic.Anthropic(base_url=sim.anthropic_url, api_key="sk-right", max_retries=0)
    short = client.messages.count_tokens(model="claude-haiku-4-5",
                                         messages=[{"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(model="claude-haiku-4-5", system="be kind " * 20,
                                          messages=[{"role": "user", "content": "hi"}])
    assert 0 < short.input_tokens < longer.input_tokens
    wrong = anthropic.Anthropic(base_url=sim.anthropic_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}])


def test_json_mode_follows_a_schema_in_the_prompt(sim: Simulator) -> None:
    # What instructor's Mode.JSON sends: JSON mode, and the schema in the system message.
    schema = json.dumps(Person.model_json_schema())
    system = (f"As a genius expert, your task is to understand the content and provide the parsed "
              f"objects in json that match the following json_schema:\n\n{schema}\n\nMake sure to "
              "return an instance of the JSON, not the schema itself")
    client = _client(sim)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", response_format={"type": "json_object"},
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Ann, 31"}])
    Person.model_validate_json(answer.choices[0].message.content or "")
    plain = client.chat.completions.create(
        model="gpt-4o-mini", response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "no schema here"}])
    assert set(json.loads(plain.choices[0].message.content or "")) == {"answer"}


def test_plain_text_follows_dspy_field_markers(sim: Simulator) -> None:
    system = ("Your input fields are:\n1. `question` (str):\nYour output fields are:\n"
              "1. `reasoning` (str): \n2. `answer` (int):")
    user = ("[[ ## question ## ]]\nHow many?\n\nRespond with the corresponding output fields, "
            "starting with the field `[[ ## reasoning ## ]]`, then `[[ ## answer ## ]]` (must be "
            "formatted as a valid Python int), and then ending with the marker for "
            "`[[ ## completed ## ]]`.")
    answer = _client(sim).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": system},
                                       {"role": "user", "content": user}])
    text = answer.choices[0].message.content or ""
    sections = text.split("[[ ## ")
    assert [s.split(" ## ]]")[0] for s in sections[1:]] == ["reasoning", "answer", "completed"]
    assert sections[2].split("]]")[1].strip() == "1"
