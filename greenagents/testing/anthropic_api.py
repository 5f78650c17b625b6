"""Anthropic Messages on the wire: request parsing, response bodies, stream events, errors.

Shapes follow what the official ``anthropic`` SDK validates, so ``client.messages.create`` (text,
tools, forced ``tool_choice``), ``.parse`` with ``output_format`` and ``.stream`` accept every answer.

>>> chat = AnthropicDialect().parse({"model": "m", "max_tokens": 10,
...                                  "messages": [{"role": "user", "content": "hi"}]})
>>> chat.last_user, chat.max_tokens
('hi', 10)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from greenagents.testing.shapes import (
    PIECE,
    STATUS,
    Answer,
    Chat,
    ErrorKind,
    Event,
    InvalidRequest,
    Tool,
    ToolCall,
    ToolMode,
    bearer_token,
    flat_text,
    message_prompt,
    pieces,
    sse,
    sse_stamp,
)

_ERROR_TYPES: dict[ErrorKind, str] = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "not_found": "not_found_error",
    "method_not_allowed": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "server_error": "api_error",
    "overloaded": "overloaded_error",
    "quota": "invalid_request_error",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
_TOOL_MODES: dict[str, ToolMode] = {"auto": "auto", "any": "required", "none": "none"}


class AnthropicDialect:
    """``POST /v1/messages`` as Anthropic serves it."""

    name = "anthropic"

    def parse(self, body: Any) -> Chat:
        """Turn a Messages request body into a :class:`Chat`, or raise InvalidRequest."""
        model, messages, max_tokens = _require(body)
        tools = tuple(Tool(t["name"], t["input_schema"]) for t in body.get("tools") or ()
                      if isinstance(t, dict) and "input_schema" in t and "name" in t)
        mode, forced = _tool_choice(body.get("tool_choice"), tools)
        prompt, tokens = message_prompt(messages, flat_text(body.get("system", "")))
        users = [m for m in messages if m.get("role") == "user"]
        last = messages[-1].get("content")
        results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"] \
            if isinstance(last, list) else []
        return Chat(
            model=model, prompt=prompt, prompt_tokens=tokens,
            last_user=flat_text(users[-1].get("content")) if users else "",
            schema=_output_schema(body), tools=tools, tool_mode=mode, forced_tool=forced,
            after_tool_result=bool(results),
            tool_results=tuple(_result_text(b) for b in results),
            stream=bool(body.get("stream")), include_usage=True, max_tokens=max_tokens,
        )

    def render(self, chat: Chat, answer: Answer) -> dict[str, Any]:
        """A ``message`` object with one text block or one tool_use block per tool call."""
        return {**_message(chat), "content": _blocks(answer, streaming=False),
                "stop_reason": _STOP[answer.finish],
                "usage": _usage(answer.prompt_tokens, answer.completion_tokens)}

    def events(self, chat: Chat, answer: Answer) -> Iterator[Event]:
        """message_start, content_block_start/delta…/stop, message_delta, message_stop."""
        start = {**_message(chat), "content": [], "stop_reason": None,
                 "usage": _usage(answer.prompt_tokens, 1)}
        yield sse({"type": "message_start", "message": start}, "message_start"), 0
        texts = [call.json for call in answer.tool_calls] or [answer.payload]
        kind = "partial_json" if answer.tool_calls else "text"
        for index, (block, text) in enumerate(zip(_blocks(answer, streaming=True), texts, strict=True)):
            start_block = {"type": "content_block_start", "index": index, "content_block": block}
            yield sse(start_block, "content_block_start"), 0
            delta = {"type": "input_json_delta" if answer.tool_calls else "text_delta", kind: PIECE}
            stamp = sse_stamp({"type": "content_block_delta", "index": index, "delta": delta},
                              "content_block_delta")
            for piece in pieces(text):
                yield stamp(piece), 1
            yield sse({"type": "content_block_stop", "index": index}, "content_block_stop"), 0
        end = {"type": "message_delta", "usage": {"output_tokens": answer.completion_tokens},
               "delta": {"stop_reason": _STOP[answer.finish], "stop_sequence": None}}
        yield sse(end, "message_delta"), 0
        yield sse({"type": "message_stop"}, "message_stop"), 0

    def error(self, kind: ErrorKind, message: str) -> tuple[int, dict[str, Any]]:
        """``{"type": "error", "error": {"type", "message"}}``; overloaded is 529, no credit 400."""
        status = {"overloaded": 529, "quota": 400}.get(kind, STATUS[kind])
        return status, {"type": "error", "error": {"type": _ERROR_TYPES[kind], "message": message}}

    def models(self, names: tuple[str, ...]) -> dict[str, Any]:
        """A model list in Anthropic's paginated shape."""
        data = [{"type": "model", "id": n, "display_name": n,
                 "created_at": "2024-01-01T00:00:00Z"} for n in names]
        return {"data": data, "has_more": False, "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None}

    def api_key(self, headers: dict[str, str]) -> str | None:
        """The ``x-api-key`` header, or the bearer token recent SDKs send instead."""
        return headers.get("x-api-key") or bearer_token(headers)


def _result_text(block: dict[str, Any]) -> str:
    """A ``tool_result``'s text as the answer quotes it: ``[is_error] ...`` for a failed tool."""
    flag = block.get("is_error", False)
    if not isinstance(flag, bool):
        raise InvalidRequest(f"tool_result.is_error: Input should be a valid boolean, got {flag!r}")
    return ("[is_error] " if flag else "") + flat_text(block.get("content"))


def _require(body: Any) -> tuple[str, list[dict[str, Any]], int]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: Field required (a non-empty list)")
    if not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InvalidRequest("messages: each message must be an object with a 'role'")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Field required (a positive integer)")
    return model, messages, max_tokens


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> tuple[ToolMode, str | None]:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind is None:
        return ("auto" if tools else "none"), None
    if kind in _TOOL_MODES:
        return _TOOL_MODES[kind], None
    name = raw.get("name")
    if kind != "tool" or name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice: no tool named {name!r} in 'tools'")
    return "required", name


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
    if fmt.get("type") != "json_schema":
        return None
    if not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest("output_config.format.schema: must be a JSON schema object")
    schema: dict[str, Any] = fmt["schema"]
    return schema


def _message(chat: Chat) -> dict[str, Any]:
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": chat.model, "stop_sequence": None}


def _blocks(answer: Answer, *, streaming: bool) -> list[dict[str, Any]]:
    """The content blocks; when streaming they start empty and deltas fill them in."""
    if not answer.tool_calls:
        return [{"type": "text", "text": "" if streaming else answer.text}]
    return [_tool_use(call, streaming) for call in answer.tool_calls]


def _tool_use(call: ToolCall, streaming: bool) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_" + call.id.removeprefix("call_"), "name": call.name,
            "input": {} if streaming else call.arguments}


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens}
