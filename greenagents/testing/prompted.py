"""Formats a prompt asks for in its own text, which the simulated model then follows.

Libraries that cannot use a provider's structured output describe the format in the prompt:
instructor's ``Mode.JSON`` sends JSON mode plus a JSON schema in the prompt, DSPy's ChatAdapter
asks for ``[[ ## field ## ]]`` sections. A real model follows them; so does the simulator when the
request is unambiguous (a schema object in the prompt; one "Respond with the corresponding output
fields" sentence), and answers as before otherwise.

>>> schema_in_prompt('Match this json_schema: {"type": "object", "properties": {"a": {}}} thanks')
{'type': 'object', 'properties': {'a': {}}}
>>> output_fields("Respond with the corresponding output fields, starting with the field "
...               "`[[ ## answer ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`.")
['answer']
"""

from __future__ import annotations

import json
import re
from typing import Any

from greenagents.testing.shapes import Schema

__all__ = ["field_answer", "output_fields", "schema_in_prompt"]

_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_RESPOND = "Respond with the corresponding output fields"
_FIELD_TYPE = re.compile(r"`(\w+)` \(([^)]*)\)")


def schema_in_prompt(prompt: str) -> Schema | None:
    """The last JSON object in ``prompt`` that is a JSON schema of an object, or None."""
    decoder = json.JSONDecoder()
    found: Schema | None = None
    start = prompt.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(prompt, start)
        except ValueError:
            start = prompt.find("{", start + 1)
            continue
        if isinstance(value, dict) and isinstance(value.get("properties"), dict):
            found = value
        start = prompt.find("{", end)
    return found


def output_fields(prompt: str) -> list[str] | None:
    """The fields a DSPy-style prompt asks for, in order (``completed`` excluded), or None."""
    asks = prompt.split(_RESPOND)
    if len(asks) != 2:  # absent, or asked twice: ambiguous, answer as usual
        return None
    fields = [name for name in _MARKER.findall(asks[1].split("\n\n")[0]) if name != "completed"]
    return fields or None


def field_answer(prompt: str, fields: list[str], text: str) -> str:
    """``[[ ## field ## ]]`` sections with a value of each field's declared type, then completed."""
    types = dict(_FIELD_TYPE.findall(prompt))
    text = " ".join(_MARKER.sub(" ", text).split())  # an echoed marker would start a field
    sections = [f"[[ ## {name} ## ]]\n{_value(types.get(name, 'str'), text)}" for name in fields]
    return "\n\n".join([*sections, "[[ ## completed ## ]]"])


def _value(kind: str, text: str) -> Any:
    kind = kind.strip()
    literal = re.match(r"Literal\[(.*)\]", kind)
    if literal:
        return literal.group(1).split(",")[0].strip().strip("'\"")
    samples = {"int": "1", "float": "0.5", "bool": "True"}
    if kind in samples:
        return samples[kind]
    if kind.startswith(("list", "dict")):
        return "[]" if kind.startswith("list") else "{}"
    return text
