"""JSON Schema → example instance, and the deliberate opposite.

The simulator answers structured-output and tool-call requests with JSON built from the schema the
client sent, so a client's own validation (``client.chat.completions.parse``, a pydantic model) can
run against the simulator exactly as against a real model. The subset covered is what pydantic's
``model_json_schema()`` and the providers' strict modes emit: objects, arrays (``items``,
``prefixItems``, ``minItems``/``maxItems``, ``uniqueItems``), ``enum``/``const``, ``$ref`` into
``$defs``/``definitions``, ``anyOf``/``oneOf``/``allOf``, bounded numbers and integers, strings
(length and common ``format``\\s), booleans and null. ``pattern`` is not honoured. Constraints a
client moved into the description — the anthropic SDK turns what its strict mode lacks into a
trailing ``{minimum: 0, maximum: 1}`` — are obeyed, as a model reading them would.

>>> import random
>>> schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3,
...           "maximum": 3}}, "required": ["n"], "additionalProperties": False}
>>> generate(schema, random.Random(0))
{'n': 3}
>>> "n" in violate(schema, {"n": 3})
False
"""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

Schema = dict[str, Any]

#: Below this nesting depth optional branches (null alternatives, empty arrays) are preferred, so
#: recursive models (a tree of nodes) terminate.
MAX_DEPTH = 6

_WORDS = ("alpha", "bright", "cedar", "delta", "ember", "fable", "granite", "harbor", "ivory",
          "juniper", "kestrel", "lumen", "meadow", "nimbus", "orchid", "pebble", "quartz", "river")

_FORMATS = {
    "date-time": "2024-01-02T03:04:05Z",
    "date": "2024-01-02",
    "time": "03:04:05",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def generate(schema: Schema, rng: random.Random) -> Any:
    """Return a JSON-compatible value valid against ``schema``; ``rng`` makes it reproducible.

    >>> generate({"enum": ["positive", "negative"]}, random.Random(1)) in ("positive", "negative")
    True
    """
    return _Generator(schema, rng).value(schema, 0)


def violate(schema: Schema, instance: Any) -> Any:
    """Return ``instance`` changed to break ``schema`` while staying valid JSON.

    Used by the ``schema_invalid`` fault: a required property goes missing if there is one, else
    the value becomes one of the wrong type or outside its enum.

    >>> violate({"type": "string"}, "x")
    12345
    """
    node = _resolve(schema, schema)
    if isinstance(instance, dict) and node.get("required"):
        broken = dict(instance)
        broken.pop(node["required"][0], None)
        return broken
    if "enum" in node or "const" in node:
        return "__not_a_valid_choice__"
    return "not-valid" if _types(node) & {"integer", "number", "boolean", "array", "object"} \
        else 12345


def _resolve(node: Schema, root: Schema) -> Schema:
    """Follow ``$ref`` (local JSON pointers only) until a concrete schema node is reached."""
    seen = 0
    while "$ref" in node and seen < 32:
        target: Any = root
        for part in node["$ref"].lstrip("#").strip("/").split("/"):
            if part:
                target = target[part.replace("~1", "/").replace("~0", "~")]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    return node


_HINTS = re.compile(r"\{([^{}]*)\}\s*$")


def _with_hints(node: Schema) -> Schema:
    """Merge ``{key: value, ...}`` constraints at the end of the description into the node.

    >>> _with_hints({"type": "number", "description": "Score\\n\\n{maximum: 1, minimum: 0}"})["maximum"]
    1
    """
    found = _HINTS.search(str(node.get("description", "")))
    if not found:
        return node
    hints: Schema = {}
    for pair in found.group(1).split(", "):
        key, _, raw = pair.partition(": ")
        try:
            hints[key.strip()] = json.loads(raw)
        except ValueError:
            continue
    return {**hints, **node}


def _types(node: Schema) -> set[str]:
    declared = node.get("type")
    if isinstance(declared, list):
        return set(declared)
    if isinstance(declared, str):
        return {declared}
    if "properties" in node or "additionalProperties" in node:
        return {"object"}
    if "items" in node or "prefixItems" in node:
        return {"array"}
    return set()


class _Generator:
    """One generation pass: holds the root (for ``$ref``) and the random source."""

    def __init__(self, root: Schema, rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, node: Schema, depth: int) -> Any:
        node = _with_hints(_resolve(node, self.root))
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return self.rng.choice(node["enum"])
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self.value(self._pick_branch(node[key], depth), depth + 1)
        if "allOf" in node:
            merged: Schema = {k: v for k, v in node.items() if k != "allOf"}
            for part in node["allOf"]:
                merged = _merge(merged, _resolve(part, self.root))
            return self.value(merged, depth)
        kind = self._pick_type(node, depth)
        return getattr(self, f"_{kind}")(node, depth)

    def _pick_branch(self, branches: list[Schema], depth: int) -> Schema:
        concrete = [b for b in branches if _resolve(b, self.root).get("type") != "null"]
        if len(concrete) < len(branches) and (depth >= MAX_DEPTH or not concrete):
            return {"type": "null"}
        return self.rng.choice(concrete)

    def _pick_type(self, node: Schema, depth: int) -> str:
        kinds = sorted(_types(node)) or ["string"]
        if "null" in kinds and len(kinds) > 1:
            kinds = ["null"] if depth >= MAX_DEPTH else [k for k in kinds if k != "null"]
        return self.rng.choice(kinds)

    def _object(self, node: Schema, depth: int) -> dict[str, Any]:
        props: dict[str, Schema] = node.get("properties", {})
        result = {name: self.value(sub, depth + 1) for name, sub in props.items()}
        extra = node.get("additionalProperties")
        if not props and isinstance(extra, dict) and depth < MAX_DEPTH:
            for _ in range(max(node.get("minProperties", 1), 1)):
                result[f"{self.rng.choice(_WORDS)}_{len(result)}"] = self.value(extra, depth + 1)
        return result

    def _array(self, node: Schema, depth: int) -> list[Any]:
        prefix: list[Schema] = node.get("prefixItems", [])
        low = max(node.get("minItems", 0), len(prefix))
        default_high = low if depth >= MAX_DEPTH else max(low, 1) + 2
        high = min(node.get("maxItems", default_high), default_high)
        wanted = self.rng.randint(max(low, min(1, high)), max(high, low))
        items = [self.value(sub, depth + 1) for sub in prefix]
        rest = node.get("items", {}) if node.get("items") is not False else None
        if rest is None:
            return items
        tries = 0
        while len(items) < wanted and tries < wanted * 10:
            candidate = self.value(rest, depth + 1)
            tries += 1
            if not node.get("uniqueItems") or candidate not in items:
                items.append(candidate)
        return items

    def _string(self, node: Schema, depth: int) -> str:
        if node.get("format") in _FORMATS:
            return _FORMATS[node["format"]]
        low, high = node.get("minLength", 1), node.get("maxLength", 24)
        text = " ".join(self.rng.choice(_WORDS) for _ in range(3))
        while len(text) < low:
            text += " " + self.rng.choice(_WORDS)
        return text[: max(high, 0)] if len(text) > high else text

    def _integer(self, node: Schema, depth: int) -> int:
        low, high = _bounds(node, integer=True)
        return int(self._multiple(low, high, node.get("multipleOf", 1)))

    def _number(self, node: Schema, depth: int) -> float:
        low, high = _bounds(node, integer=False)
        if "multipleOf" in node:
            return float(self._multiple(low, high, node["multipleOf"]))
        return min(max(round(self.rng.uniform(low, high), 3), low), high)

    def _multiple(self, low: float, high: float, step: float) -> float:
        first, last = math.ceil(low / step), math.floor(high / step)
        return step * (first if last < first else self.rng.randint(first, last))

    def _boolean(self, node: Schema, depth: int) -> bool:
        return self.rng.random() < 0.5

    def _null(self, node: Schema, depth: int) -> None:
        return None


def _bounds(node: Schema, *, integer: bool) -> tuple[float, float]:
    """Inclusive range from ``minimum``/``maximum`` and their exclusive forms, defaulting near 0."""
    nudge = 1 if integer else 1e-3
    low: float = node.get("minimum", -math.inf)
    if "exclusiveMinimum" in node:
        low = max(low, node["exclusiveMinimum"] + nudge)
    high: float = node.get("maximum", math.inf)
    if "exclusiveMaximum" in node:
        high = min(high, node["exclusiveMaximum"] - nudge)
    if math.isinf(low) and math.isinf(high):
        return 0, 100
    if math.isinf(low):
        return high - 100, high
    if math.isinf(high):
        return low, low + 100
    return low, high


def _merge(left: Schema, right: Schema) -> Schema:
    """Shallow ``allOf`` merge: properties and required lists combine, other keys override."""
    merged = {**left, **right}
    merged["properties"] = {**left.get("properties", {}), **right.get("properties", {})}
    merged["required"] = [*left.get("required", []), *right.get("required", [])]
    if not merged["properties"]:
        del merged["properties"], merged["required"]
    return merged
