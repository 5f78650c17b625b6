"""OpenAI Chat Completions (and every OpenAI-compatible server: Ollama, vLLM, LM Studio…).

Structured output uses ``response_format={"type": "json_schema", ...}``. OpenAI's *strict* mode
guarantees the answer matches the schema, but only accepts a subset of JSON Schema: every object
closed (``additionalProperties: false``) with all its properties required, and no ``default``,
``oneOf``, ``minLength``… :func:`strict_schema` rewrites a pydantic schema into that subset when it
can, and the request falls back to ``strict: false`` when it cannot (e.g. ``dict[str, int]`` fields).

>>> p = OpenAIProvider(base_url="http://127.0.0.1:11434/v1")
>>> p.build("llama3", [{"role": "user", "content": "hi"}]).url
'http://127.0.0.1:11434/v1/chat/completions'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..result import Usage
from .base import Completion, Message, Provider, Request, ToolRequest, ToolsWire

__all__ = ["OpenAIProvider", "strict_schema"]

# Keywords OpenAI strict mode accepts (https://platform.openai.com/docs/guides/structured-outputs).
_STRICT_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const",
    "$ref", "$defs", "definitions", "description", "title", "pattern", "format", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems",
})
_TYPED = frozenset({"type", "anyOf", "$ref", "enum", "const"})
# Reasoning models reject ``max_tokens``; compatible servers often only know ``max_tokens``.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


class _NotStrict(Exception):
    """The schema uses something strict mode cannot express."""


def strict_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``schema`` that OpenAI strict mode accepts, or None when there is none.

    Objects get ``additionalProperties: false`` and every property becomes required (pydantic
    still fills defaults; optional fields keep their ``null`` branch), ``default`` and
    ``discriminator`` are dropped, ``oneOf`` becomes ``anyOf``, a one-item ``allOf`` is inlined.
    Open objects (``dict[str, X]``), untyped values (``Any``) and unsupported keywords make it None.

    >>> strict_schema({"type": "object", "properties": {"n": {"type": "integer", "default": 1}}})
    {'type': 'object', 'properties': {'n': {'type': 'integer'}}, 'additionalProperties': False, \
'required': ['n']}
    >>> strict_schema({"type": "object", "additionalProperties": {"type": "integer"}}) is None
    True
    """
    if schema.get("type") != "object":
        return None  # strict mode wants an object at the root
    try:
        return _strict_node(schema)
    except _NotStrict:
        return None


_remembered: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = {}


def _response_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``response_format`` asking for ``schema`` (strict when :func:`strict_schema` can make
    it so), remembered per schema object: an agent sends the same one on every call, and
    converting the schema each time cost ~30 µs a request. Shared by every request: not to be
    changed."""
    hit = _remembered.get((id(schema), name))
    if hit is None or hit[0] is not schema:
        if len(_remembered) > 256:  # callers building fresh schemas each time: stay bounded
            _remembered.clear()
        strict = strict_schema(schema)
        hit = _remembered[(id(schema), name)] = (schema, {"type": "json_schema", "json_schema": {
            "name": name, "schema": strict or schema, "strict": strict is not None}})
    return hit[1]


def _strict_node(node: Any) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _NotStrict  # boolean schemas
    if "allOf" in node:
        if len(node["allOf"]) != 1:
            raise _NotStrict
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _strict_node({**node["allOf"][0], **rest})
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("default", "discriminator"):
            continue
        if key == "oneOf":
            key = "anyOf"
        if key not in _STRICT_KEYWORDS:
            raise _NotStrict
        if key in ("properties", "$defs", "definitions"):
            value = {name: _strict_node(sub) for name, sub in value.items()}
        elif key == "anyOf":
            value = [_strict_node(sub) for sub in value]
        elif key == "items":
            if not isinstance(value, dict):
                raise _NotStrict
            value = _strict_node(value)
        elif key == "additionalProperties" and value is not False:
            raise _NotStrict
        out[key] = value
    if not _TYPED.intersection(out):
        raise _NotStrict  # an untyped node (``Any``) cannot be strict
    if out.get("type") == "object" or "properties" in out:
        if "properties" not in out:
            raise _NotStrict  # a free-form object cannot be closed
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out


#: Tool specs as Chat Completions ``function`` tools (shared by every request: not to be changed).
_function_tools = ToolsWire(lambda tools: [{"type": "function", "function": dict(t)}
                                           for t in tools])


class OpenAIProvider(Provider):
    """Chat Completions at ``{base_url}/chat/completions`` with a Bearer key (none if no key)."""

    def __init__(self, *, name: str = "openai", base_url: str = "https://api.openai.com/v1",
                 api_key: str | None = None, key_env: str | None = "OPENAI_API_KEY",
                 base_url_env: str | None = "OPENAI_BASE_URL") -> None:
        super().__init__(name=name, base_url=base_url, api_key=api_key, key_env=key_env,
                         base_url_env=base_url_env)

    def build(self, model: str, messages: Sequence[Message], *, schema: dict[str, Any] | None = None,
              schema_name: str = "output", temperature: float | None = None,
              max_tokens: int | None = None, tools: Sequence[Mapping[str, Any]] = ()) -> Request:
        """A Chat Completions request; ``schema`` asks for JSON matching it (strict when possible).

        ``tools`` become ``function`` tools the model may call, several at once (its default
        ``parallel_tool_calls``); they are not strict, since strict mode turns parallel calls off
        and the tool validates its arguments anyway. The neutral tool-loop messages are already
        OpenAI's, so they go as they are, less the ``is_error`` flag of a failed tool's message:
        Chat Completions has no such field (the text says ``Error: ...``).

        >>> OpenAIProvider().build("gpt-4o-mini", [], max_tokens=5).body
        {'model': 'gpt-4o-mini', 'messages': [], 'max_tokens': 5}
        """
        body: dict[str, Any] = {"model": model, "messages": [
            m if "is_error" not in m else {k: v for k, v in m.items() if k != "is_error"}
            for m in messages]}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            limit = "max_completion_tokens" if _REASONING_MODEL.match(model) else "max_tokens"
            body[limit] = max_tokens
        if tools:
            body["tools"] = _function_tools(tools)
        if schema is not None:
            body["response_format"] = _response_format(schema, schema_name)
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return Request(f"{self.base_url}/chat/completions", headers, body)

    def _completion(self, payload: dict[str, Any]) -> Completion:
        choice = payload["choices"][0]
        message = choice["message"]
        text = message.get("content")
        calls = tuple(ToolRequest(c["id"], c["function"]["name"], c["function"]["arguments"])
                      for c in message.get("tool_calls") or () if c.get("type", "function") ==
                      "function")
        if not text and calls:  # answered with a tool call instead
            text = str(calls[0].arguments)
        usage = payload.get("usage") or {}  # some compatible servers omit it
        return Completion(
            text=text or message.get("refusal") or "",
            usage=Usage(int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0)),
            model=str(payload.get("model") or ""),
            finish_reason=choice.get("finish_reason"), tool_calls=calls)
