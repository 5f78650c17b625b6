"""OpenAI's Responses API on the wire (``POST /v1/responses``): requests, bodies, stream events.

The same :class:`~greenagents.testing.shapes.Chat` and :class:`~greenagents.testing.shapes.Answer` as
Chat Completions, in the shapes the ``openai`` SDK's ``client.responses.create`` (and
``stream=True``) reads: ``output`` items (a message with ``output_text``, or a ``function_call``),
``usage`` in input/output tokens, and ``response.*`` events with sequence numbers. Errors, model
list and auth are OpenAI's.

>>> chat = ResponsesDialect().parse({"model": "m", "input": "hi", "instructions": "be brief"})
>>> chat.last_user, chat.prompt
('hi', 'be brief\\nhi')
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from greenagents.testing.openai_api import OpenAIDialect
from greenagents.testing.shapes import (
    Answer,
    Chat,
    Event,
    InvalidRequest,
    Tool,
    ToolMode,
    flat_text,
    message_prompt,
    pieces,
    sse,
)

__all__ = ["ResponsesDialect"]


def _messages(raw: Any) -> list[dict[str, Any]]:
    """``input`` as role/content messages: a string is one user message; tool outputs count as
    messages of role ``tool``."""
    if isinstance(raw, str) and raw:
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'input' must be a non-empty string or array of input items.")
    messages: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidRequest("Each input item must be an object.")
        if item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output", ""))})
        elif item.get("type") == "function_call":
            messages.append({"role": "assistant", "content": str(item.get("arguments", ""))})
        else:
            messages.append({"role": item.get("role", "user"), "content": item.get("content")})
    return messages


def _tools(raw: Any) -> tuple[Tool, ...]:
    tools = []
    for tool in raw or ():
        if not isinstance(tool, dict) or tool.get("type") != "function" or "name" not in tool:
            continue  # built-in tools (web search, files) are not simulated
        tools.append(Tool(tool["name"], tool.get("parameters") or {"type": "object", "properties": {}}))
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> tuple[ToolMode, str | None]:
    if raw is None:
        return ("auto" if tools else "none"), None
    if raw in ("none", "auto", "required"):
        return raw, None
    name = raw.get("name") if isinstance(raw, dict) else None
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names a function that is not in 'tools': {name!r}")
    return "required", name


class ResponsesDialect(OpenAIDialect):
    """``POST /v1/responses`` as OpenAI serves it (errors, models and auth as Chat Completions)."""

    def parse(self, body: Any) -> Chat:
        """Turn a Responses request body into a :class:`Chat`, or raise InvalidRequest."""
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("you must provide a model parameter")
        messages = _messages(body.get("input"))
        fmt = (body.get("text") or {}).get("format") or {}
        schema = fmt.get("schema") if fmt.get("type") == "json_schema" else None
        if fmt.get("type") == "json_schema" and not isinstance(schema, dict):
            raise InvalidRequest("text.format.schema must be a JSON schema object.")
        tools = _tools(body.get("tools"))
        mode, forced = _tool_choice(body.get("tool_choice"), tools)
        prompt, tokens = message_prompt(messages, body.get("instructions") or "")
        users = [m for m in messages if m.get("role") == "user"]
        return Chat(model=model, prompt=prompt, prompt_tokens=tokens,
                    last_user=flat_text(users[-1].get("content")) if users else "",
                    schema=schema, json_mode=fmt.get("type") == "json_object", tools=tools,
                    tool_mode=mode, forced_tool=forced,
                    after_tool_result=messages[-1].get("role") == "tool",
                    stream=bool(body.get("stream")), max_tokens=body.get("max_output_tokens"))

    def render(self, chat: Chat, answer: Answer) -> dict[str, Any]:
        """A ``response`` object, status completed (incomplete when cut by max_output_tokens)."""
        return _response(chat, answer, _new_id("resp"), [_item(answer, done=True)], final=True)

    def events(self, chat: Chat, answer: Answer) -> Iterator[Event]:
        """created, in_progress, output item and part added, deltas, done events, completed."""
        numbers = iter(range(1_000_000))
        item, response_id = _item(answer, done=False), _new_id("resp")  # one id for every event

        def event(kind: str, tokens: int = 0, **fields: Any) -> Event:
            return sse({"type": kind, "sequence_number": next(numbers), **fields}, kind), tokens

        for kind in ("response.created", "response.in_progress"):
            yield event(kind, response=_response(chat, answer, response_id, [], final=False))
        yield event("response.output_item.added", output_index=0, item=item)
        where = {"item_id": item["id"], "output_index": 0}
        if answer.tool_name is None:
            yield event("response.content_part.added", **where, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []})
            for piece in pieces(answer.payload):
                yield event("response.output_text.delta", 1, **where, content_index=0, delta=piece,
                            logprobs=[])
            yield event("response.output_text.done", **where, content_index=0, text=answer.payload,
                        logprobs=[])
            yield event("response.content_part.done", **where, content_index=0,
                        part={"type": "output_text", "text": answer.payload, "annotations": []})
        else:
            for piece in pieces(answer.payload):
                yield event("response.function_call_arguments.delta", 1, **where, delta=piece)
            yield event("response.function_call_arguments.done", **where, arguments=answer.payload)
        finished = _item(answer, done=True)
        done = {**finished, "id": item["id"], "call_id": item.get("call_id")} \
            if answer.tool_name is not None else {**finished, "id": item["id"]}
        yield event("response.output_item.done", output_index=0, item=done)
        final = _response(chat, answer, response_id, [done], final=True)
        yield event(f"response.{final['status']}", response=final)


def _item(answer: Answer, *, done: bool) -> dict[str, Any]:
    status = "completed" if done else "in_progress"
    if answer.tool_name is not None:
        return {"type": "function_call", "id": _new_id("fc"),
                "call_id": _new_id("call"), "name": answer.tool_name,
                "arguments": answer.payload if done else "", "status": status}
    content = [{"type": "output_text", "text": answer.payload, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": _new_id("msg"), "role": "assistant",
            "status": status, "content": content if done else []}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _response(chat: Chat, answer: Answer, response_id: str, output: list[dict[str, Any]], *,
              final: bool) -> dict[str, Any]:
    incomplete = final and answer.finish == "length"
    status = ("incomplete" if incomplete else "completed") if final else "in_progress"
    usage = {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens,
             "total_tokens": answer.prompt_tokens + answer.completion_tokens,
             "input_tokens_details": {"cached_tokens": 0},
             "output_tokens_details": {"reasoning_tokens": 0}}
    return {"id": response_id, "object": "response",
            "created_at": int(time.time()), "status": status, "model": chat.model,
            "output": output, "usage": usage if final else None, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": None, "metadata": {}, "parallel_tool_calls": True,
            "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
            "text": {"format": {"type": "text"}}}
