"""OpenAI Chat Completions on the wire: request parsing, response bodies, stream chunks, errors.

Shapes follow what the official ``openai`` SDK validates, so ``client.chat.completions.create``,
``.parse`` (structured outputs) and ``stream=True`` accept every answer.

>>> chat = OpenAIDialect().parse({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
>>> chat.last_user, chat.tool_mode
('hi', 'none')
"""

from __future__ import annotations

import time
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

_ERROR_TYPES: dict[ErrorKind, tuple[str, str | None]] = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "not_found": ("invalid_request_error", "unknown_url"),
    "method_not_allowed": ("invalid_request_error", "method_not_supported"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "server_error": ("server_error", None),
    "overloaded": ("server_error", "service_unavailable"),
    "quota": ("insufficient_quota", "insufficient_quota"),
}
_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


class OpenAIDialect:
    """``POST /v1/chat/completions`` as OpenAI serves it."""

    name = "openai"

    def parse(self, body: Any) -> Chat:
        """Turn a Chat Completions request body into a :class:`Chat`, or raise InvalidRequest."""
        model, messages = _require(body)
        tools = _tools(body.get("tools"))
        mode, forced = _tool_choice(body.get("tool_choice"), tools)
        fmt = body.get("response_format") or {}
        prompt, tokens = message_prompt(messages)
        users = [m for m in messages if m.get("role") == "user"]
        trailing = len(messages)
        while trailing and messages[trailing - 1].get("role") == "tool":
            trailing -= 1
        return Chat(
            model=model, prompt=prompt, prompt_tokens=tokens,
            last_user=flat_text(users[-1].get("content")) if users else "",
            schema=_json_schema(fmt), json_mode=fmt.get("type") == "json_object",
            tools=tools, tool_mode=mode, forced_tool=forced,
            after_tool_result=messages[-1].get("role") == "tool",
            tool_results=tuple(flat_text(m.get("content")) for m in messages[trailing:]),
            stream=bool(body.get("stream")),
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        )

    def render(self, chat: Chat, answer: Answer) -> dict[str, Any]:
        """A ``chat.completion`` object."""
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.tool_calls:
            message["tool_calls"] = [_tool_call(call, call.json) for call in answer.tool_calls]
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": _FINISH[answer.finish]}
        return {**_envelope(chat, "chat.completion"), "choices": [choice], "usage": _usage(answer)}

    def events(self, chat: Chat, answer: Answer) -> Iterator[Event]:
        """``chat.completion.chunk`` events: role, content (or tool-call argument) deltas, finish,
        optional usage, then ``[DONE]``."""
        head = _envelope(chat, "chat.completion.chunk")
        extra = {"usage": None} if chat.include_usage else {}

        def body(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**head, "choices": [choice], **extra}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse(body(delta, finish))

        if not answer.tool_calls:
            yield chunk({"role": "assistant", "content": ""}), 0
            content = sse_stamp(body({"content": PIECE}))
            for piece in pieces(answer.payload):
                yield content(piece), 1
        for index, call in enumerate(answer.tool_calls):
            head_delta = {"tool_calls": [_tool_call(call, "", index)]}
            yield chunk({"role": "assistant", **head_delta} if index == 0 else head_delta), 0
            arguments = sse_stamp(body({"tool_calls": [{"index": index,
                                                        "function": {"arguments": PIECE}}]}))
            for piece in pieces(call.json):
                yield arguments(piece), 1
        yield chunk({}, _FINISH[answer.finish]), 0
        if chat.include_usage:
            yield sse({**head, "choices": [], "usage": _usage(answer)}), 0
        yield sse("[DONE]"), 0

    def error(self, kind: ErrorKind, message: str) -> tuple[int, dict[str, Any]]:
        """``{"error": {"message", "type", "param", "code"}}`` with OpenAI's status codes."""
        kind_type, code = _ERROR_TYPES[kind]
        return STATUS[kind], {"error": {"message": message, "type": kind_type, "param": None,
                                        "code": code}}

    def models(self, names: tuple[str, ...]) -> dict[str, Any]:
        """A model list in OpenAI's ``{"object": "list", "data": [...]}`` shape."""
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "greenagents-sim"}
                for n in names]
        return {"object": "list", "data": data}

    def api_key(self, headers: dict[str, str]) -> str | None:
        """The bearer token of ``Authorization``."""
        return bearer_token(headers)


def _require(body: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of message objects.")
    if not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InvalidRequest("Each message must be an object with a 'role'.")
    return model, messages


def _tools(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    try:
        return tuple(Tool(t["function"]["name"], t["function"].get("parameters") or
                          {"type": "object", "properties": {}}) for t in raw)
    except (TypeError, KeyError) as exc:
        raise InvalidRequest("Each tool must be {'type': 'function', 'function': {'name': ...}}.") \
            from exc


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> tuple[ToolMode, str | None]:
    if raw is None:
        return ("auto" if tools else "none"), None
    if raw in ("none", "auto", "required"):
        return raw, None
    name = raw.get("function", {}).get("name") if isinstance(raw, dict) else None
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names a function that is not in 'tools': {name!r}")
    return "required", name


def _json_schema(fmt: dict[str, Any]) -> dict[str, Any] | None:
    if fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format.json_schema.schema must be a JSON schema object.")
    return schema


def _envelope(chat: Chat, kind: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
            "model": chat.model, "system_fingerprint": "fp_greenagents_sim"}


def _tool_call(call: ToolCall, arguments: str, index: int | None = None) -> dict[str, Any]:
    wire = {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": arguments}}
    return wire if index is None else {"index": index, **wire}


def _usage(answer: Answer) -> dict[str, int]:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


__all__ = ["OpenAIDialect"]
