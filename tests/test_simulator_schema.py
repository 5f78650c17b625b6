"""The simulator's JSON-schema generator against pydantic's own schemas and validation."""

from __future__ import annotations

import random
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union
from uuid import UUID

import pydantic
import pytest
from pydantic import BaseModel, Field

from greenagents.testing.schema import generate, violate


class Mood(str, Enum):
    happy = "happy"
    sad = "sad"


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    score: float = Field(ge=0, le=1)


class Address(BaseModel):
    street: str = Field(min_length=3, max_length=40)
    zip_code: Annotated[int, Field(gt=999, lt=100_000)]


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    mood: Mood
    address: Address
    previous: list[Address] = Field(min_length=2, max_length=4)
    nickname: Optional[str] = None  # noqa: UP045 — the Optional spelling is what we cover
    tags: list[str] = Field(default_factory=list)
    born: date
    seen_at: datetime
    ident: UUID


class Node(BaseModel):
    value: int
    children: list[Node] = Field(default_factory=list)
    parent: Optional[Node] = None  # noqa: UP045


class Shapes(BaseModel):
    kind: Union[Sentiment, Address]  # noqa: UP007
    pair: tuple[int, str]
    scores: dict[str, float]
    unique: Annotated[list[Mood], Field(min_length=2, max_length=2, json_schema_extra={
        "uniqueItems": True})]
    step: Annotated[float, Field(multiple_of=0.5, ge=1, le=3)]
    flag: bool
    nothing: None
    anything: Any = None


class Strict(BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    choice: Literal["a", "b"]
    inner: Sentiment


MODELS = [Sentiment, Address, Person, Node, Shapes, Strict]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_generated_instances_validate(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    for seed in range(40):
        model.model_validate(generate(schema, random.Random(seed)))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_generation_is_reproducible(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    assert generate(schema, random.Random(7)) == generate(schema, random.Random(7))


@pytest.mark.parametrize("model", [Sentiment, Address, Person, Strict],
                         ids=lambda m: m.__name__)
def test_violations_fail_validation(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    instance = generate(schema, random.Random(0))
    with pytest.raises(pydantic.ValidationError):
        model.model_validate(violate(schema, instance))


def test_openai_strict_schema_validates() -> None:
    """The schema the openai SDK sends for ``parse`` (strict: all required, nullable anyOf)."""
    from openai.lib._pydantic import to_strict_json_schema

    schema = to_strict_json_schema(Person)
    for seed in range(20):
        Person.model_validate(generate(schema, random.Random(seed)))


def test_scalar_violations_change_type() -> None:
    assert violate({"enum": ["x"]}, "x") not in ["x"]
    assert isinstance(violate({"type": "integer"}, 3), str)


@pytest.mark.parametrize("model", [m for m in MODELS if m is not Shapes],  # Any: SDK refuses
                         ids=lambda m: m.__name__)
def test_anthropic_transformed_schema_validates(model: type[BaseModel]) -> None:
    """The anthropic SDK moves unsupported constraints into descriptions; they still hold."""
    from anthropic.lib._parse._transform import transform_schema

    schema = transform_schema(model.model_json_schema())
    for seed in range(20):
        model.model_validate(generate(schema, random.Random(seed)))
