"""Structured output: the JSON schema we send, the validation of what comes back, the re-ask.

An agent's ``output`` is ``str`` (free text), a pydantic model, or any type pydantic can validate
(``list[str]``, ``Literal["a", "b"]``...), which travels wrapped as ``{"value": ...}`` because
providers want an object at the top. An answer that does not validate raises
:class:`InvalidOutput`; the agent then re-asks, showing the model its answer and the errors — the
way instructor does — and the re-ask counts as an attempt of the retry budget.

>>> from pydantic import BaseModel
>>> class Mood(BaseModel):
...     label: str
>>> OutputSpec(Mood).parse('{"label": "calm"}')
Mood(label='calm')
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from .errors import OutputError

__all__ = ["InvalidOutput", "OutputSpec"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class InvalidOutput(OutputError):
    """The answer did not validate; ``answer`` is what the model said, ``problems`` why not."""

    retryable = True  # re-asking can fix it, within the retry budget
    reask = True

    def __init__(self, message: str, *, answer: str, problems: str):
        super().__init__(message)
        self.answer = answer
        self.problems = problems


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())


class OutputSpec:
    """How one output type is asked for (``schema``) and checked (``parse``)."""

    def __init__(self, output: Any):
        self.output = output
        self.wrapped = False
        self.model: type[BaseModel] | None = None
        if output is str:
            self.name = "text"
        elif isinstance(output, type) and issubclass(output, BaseModel):
            self.model, self.name = output, output.__name__
        else:
            self.model = create_model("Output", value=(output, ...))
            self.wrapped, self.name = True, "Output"
        # the JSON schema to request (None for free text); built once, it is not cheap
        self.schema: dict[str, Any] | None = (
            None if self.model is None else self.model.model_json_schema())

    def parse(self, text: str) -> Any:
        """The validated value of an answer, or :class:`InvalidOutput`."""
        if self.model is None:
            return text
        fenced = _FENCE.match(text)
        try:
            value = self.model.model_validate_json(fenced.group(1) if fenced else text)
        except ValidationError as exc:
            problems = _problems(exc)
            raise InvalidOutput(f"the model's answer does not fit {self.name}: {problems}; "
                                "raise the agent's retries (each re-asks) or loosen the output type",
                                answer=text, problems=problems) from None
        return value.value if self.wrapped else value  # type: ignore[attr-defined]

    @staticmethod
    def reask(invalid: InvalidOutput) -> list[dict[str, Any]]:
        """Messages to append so the model sees its invalid answer and what was wrong with it."""
        return [
            {"role": "assistant", "content": invalid.answer},
            {"role": "user", "content": (
                "That answer is not valid. Problems: " + invalid.problems +
                ". Answer again with only JSON that matches the schema exactly.")},
        ]
