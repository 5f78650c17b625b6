"""Anthropic Messages API: system prompt at the top level, images as blocks, JSON via a forced tool.

Anthropic has no JSON-schema response format; the reliable way to get structured output is a tool
whose ``input_schema`` is the schema, with ``tool_choice`` forcing the model to call it. The tool
call's ``input`` is returned as JSON text, so callers validate Anthropic and OpenAI answers alike.
Tools offered by an agent travel as ``tools`` (no ``tool_choice``: the model decides); the loop's
neutral messages become ``tool_use`` blocks in the assistant turn and ``tool_result`` blocks in the
next user turn (``is_error: true`` on a tool that failed). With tools, the forced output tool is
asked for only once the work is done (see ``structured_with_tools``), since forcing it would
forbid calling the others.

>>> p = AnthropicProvider(api_key="k")
>>> req = p.build("claude-haiku-4-5", [{"role": "system", "content": "Be brief."},
...                                    {"role": "user", "content": "hi"}])
>>> req.body["system"], req.body["messages"], req.body["max_tokens"]
('Be brief.', [{'role': 'user', 'content': 'hi'}], 4096)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..result import Usage
from .base import Completion, Message, Provider, Request, ToolRequest, ToolsWire, text_of

__all__ = ["API_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicProvider"]

API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; generous, since a cut-off structured answer cannot validate.
DEFAULT_MAX_TOKENS = 4096


def _image_block(url: str) -> dict[str, Any]:
    """An image content block; ``data:`` URLs become base64 sources (the URL source rejects them)."""
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[len("data:"):].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                            "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content(content: str | Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part.get("type") == "image_url":
            blocks.append(_image_block(part["image_url"]["url"]))
        else:
            blocks.append({"type": "text", "text": part["text"]})
    return blocks


def _tool_use(call: Mapping[str, Any]) -> dict[str, Any]:
    arguments = call["function"]["arguments"]
    try:
        given = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        given = None
    return {"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
            "input": given if isinstance(given, dict) else {}}


def _turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Anthropic turns: tool calls as ``tool_use`` blocks, tool results as
    ``tool_result`` blocks of a user turn, consecutive turns of one role merged (roles must
    alternate)."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        blocks: list[dict[str, Any]]
        if role == "tool":
            result = {"type": "tool_result", "tool_use_id": m["tool_call_id"],
                      "content": text_of(m.get("content"))}
            if m.get("is_error"):  # the tool failed: the model is told so, not only by the text
                result["is_error"] = True
            role, blocks = "user", [result]
        else:
            content = _content(m.get("content") or "")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            blocks = [b for b in blocks if b.get("type") != "text" or b["text"]]
            blocks += [_tool_use(call) for call in m.get("tool_calls") or ()]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return turns


#: Tool specs as Messages API tools (shared by every request: copied before the output tool joins).
_input_schema_tools = ToolsWire(lambda tools: [
    {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
    for t in tools])


class AnthropicProvider(Provider):
    """Messages API at ``{base_url}/v1/messages``, key in ``x-api-key``."""

    structured_with_tools = False  # a forced output tool would forbid calling the others

    def __init__(self, *, name: str = "anthropic", base_url: str = "https://api.anthropic.com",
                 api_key: str | None = None, key_env: str | None = "ANTHROPIC_API_KEY",
                 base_url_env: str | None = "ANTHROPIC_BASE_URL") -> None:
        super().__init__(name=name, base_url=base_url, api_key=api_key, key_env=key_env,
                         base_url_env=base_url_env)

    def build(self, model: str, messages: Sequence[Message], *, schema: dict[str, Any] | None = None,
              schema_name: str = "output", temperature: float | None = None,
              max_tokens: int | None = None, tools: Sequence[Mapping[str, Any]] = ()) -> Request:
        """A Messages request; ``schema`` forces a tool named ``schema_name`` taking that input.

        >>> body = AnthropicProvider().build("claude-haiku-4-5", [], schema={"type": "object"}).body
        >>> body["tool_choice"]
        {'type': 'tool', 'name': 'output'}
        """
        system = [text_of(m["content"]) for m in messages if m["role"] == "system"]
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            "messages": _turns(messages) if tools else
            [{"role": m["role"], "content": _content(m["content"])}
             for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = "\n\n".join(system)
        if temperature is not None:
            body["temperature"] = temperature
        body_tools = _input_schema_tools(tools)
        if schema is not None:
            description = schema.get("description") or "Give the answer as this tool's input."
            body_tools = [*body_tools, {"name": schema_name, "description": description,
                                        "input_schema": schema}]
            body["tool_choice"] = {"type": "tool", "name": schema_name}
        if body_tools:
            body["tools"] = body_tools
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return Request(f"{self.base_url}/v1/messages", headers, body)

    def _completion(self, payload: dict[str, Any]) -> Completion:
        blocks = payload["content"]
        calls = tuple(ToolRequest(b["id"], b["name"], b["input"]) for b in blocks
                      if b["type"] == "tool_use")
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
        if calls and not text:  # the forced output tool's input is the answer
            text = json.dumps(calls[0].arguments, ensure_ascii=False)
        usage = payload["usage"]
        # Cached prompt tokens are billed separately but are still prompt tokens.
        prompt = sum(int(usage.get(k) or 0) for k in (
            "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        return Completion(text=text, usage=Usage(prompt, int(usage.get("output_tokens") or 0)),
                          model=str(payload.get("model") or ""),
                          finish_reason=payload.get("stop_reason"), tool_calls=calls)
