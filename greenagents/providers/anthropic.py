"""Anthropic Messages API: system prompt at the top level, images as blocks, JSON via a forced tool.

Anthropic has no JSON-schema response format; the reliable way to get structured output is a tool
whose ``input_schema`` is the schema, with ``tool_choice`` forcing the model to call it. The tool
call's ``input`` is returned as JSON text, so callers validate Anthropic and OpenAI answers alike.

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
from .base import Completion, Message, Provider, Request, text_of

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


class AnthropicProvider(Provider):
    """Messages API at ``{base_url}/v1/messages``, key in ``x-api-key``."""

    def __init__(self, *, name: str = "anthropic", base_url: str = "https://api.anthropic.com",
                 api_key: str | None = None, key_env: str | None = "ANTHROPIC_API_KEY",
                 base_url_env: str | None = "ANTHROPIC_BASE_URL") -> None:
        super().__init__(name=name, base_url=base_url, api_key=api_key, key_env=key_env,
                         base_url_env=base_url_env)

    def build(self, model: str, messages: Sequence[Message], *, schema: dict[str, Any] | None = None,
              schema_name: str = "output", temperature: float | None = None,
              max_tokens: int | None = None) -> Request:
        """A Messages request; ``schema`` forces a tool named ``schema_name`` taking that input.

        >>> body = AnthropicProvider().build("claude-haiku-4-5", [], schema={"type": "object"}).body
        >>> body["tool_choice"]
        {'type': 'tool', 'name': 'output'}
        """
        system = [text_of(m["content"]) for m in messages if m["role"] == "system"]
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            "messages": [{"role": m["role"], "content": _content(m["content"])}
                         for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = "\n\n".join(system)
        if temperature is not None:
            body["temperature"] = temperature
        if schema is not None:
            description = schema.get("description") or "Give the answer as this tool's input."
            body["tools"] = [{"name": schema_name, "description": description,
                              "input_schema": schema}]
            body["tool_choice"] = {"type": "tool", "name": schema_name}
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return Request(f"{self.base_url}/v1/messages", headers, body)

    def _completion(self, payload: dict[str, Any]) -> Completion:
        blocks = payload["content"]
        tool_inputs = [b["input"] for b in blocks if b["type"] == "tool_use"]
        if tool_inputs:
            text = json.dumps(tool_inputs[0], ensure_ascii=False)
        else:
            text = "".join(b["text"] for b in blocks if b["type"] == "text")
        usage = payload["usage"]
        # Cached prompt tokens are billed separately but are still prompt tokens.
        prompt = sum(int(usage.get(k) or 0) for k in (
            "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        return Completion(text=text, usage=Usage(prompt, int(usage.get("output_tokens") or 0)),
                          model=str(payload.get("model") or ""),
                          finish_reason=payload.get("stop_reason"))
