"""What the simulated model says: deterministic text, structured JSON or tool calls.

Answers depend only on the seed and the request's text, so a test can compute what to expect by
sending the same prompt twice, and a plain answer quotes the start of the last user message so a
test can see the right prompt arrived. Offered tools and no tool results yet: the model calls
*every* offered tool once, in one turn, with arguments valid against each schema; once the request
ends with tool results, it answers quoting them (so a test sees the tools' output reach the model).

>>> from greenagents.testing.shapes import Chat
>>> compose(Chat(model="m", prompt="I love it", last_user="I love it", prompt_tokens=7), seed=0).text
'Understood. You said: "I love it".'
"""

from __future__ import annotations

import dataclasses
import json
import random

from greenagents import tokens
from greenagents.testing.prompted import field_answer, output_fields, schema_in_prompt
from greenagents.testing.schema import generate, violate
from greenagents.testing.shapes import Answer, Chat, Finish, Tool, ToolCall, digest

_LEADS = ("Positive.", "Negative.", "Neutral.", "Sure.", "Understood.", "Noted.")
_ECHO_WORDS = 8
#: The name the ``tool_unknown`` fault calls instead of the first offered tool.
UNKNOWN_TOOL = "no_such_tool"


def compose(chat: Chat, seed: int, *, invalid: bool = False, fault: str | None = None,
            words: int | None = None) -> Answer:
    """The answer to ``chat``; ``invalid`` breaks its schema or tool arguments (the
    ``schema_invalid`` fault); ``fault`` is ``"tool_unknown"`` (the first call names a tool that
    was not offered) or ``"tool_loop"`` (tools are called again even after their results);
    ``words`` lengthens plain text to that many words (see :func:`lengthened`).

    Tool calls win over text when the request allows them, except that ``tool_choice="auto"``
    answers in text once the conversation already holds a tool result, so agent loops end.
    """
    rng = random.Random(digest(seed, chat.model, chat.prompt))
    tools = _chosen_tools(chat, again=fault == "tool_loop")
    if tools:
        calls = [ToolCall(f"call_{digest(seed, chat.prompt, i):016x}", tool.name,
                          _arguments(tool, rng, invalid)) for i, tool in enumerate(tools)]
        if fault == "tool_unknown":
            calls[0] = dataclasses.replace(calls[0], name=UNKNOWN_TOOL)
        return _answer(chat, None, "tool", tuple(calls))
    if chat.schema is not None:
        value = generate(chat.schema, rng)
        return _answer(chat, json.dumps(violate(chat.schema, value) if invalid else value))
    text = plain_text(chat.last_user, rng, chat.tool_results)
    if words is not None:
        text = lengthened(text, words)
    if chat.json_mode:  # a schema in the prompt (instructor's Mode.JSON) is what to follow
        schema = schema_in_prompt(chat.prompt)
        return _answer(chat, json.dumps({"answer": text} if schema is None else generate(schema, rng)))
    fields = output_fields(chat.prompt)  # DSPy's [[ ## field ## ]] sections
    return _clipped(chat, text if fields is None else field_answer(chat.prompt, fields, text))


def _arguments(tool: Tool, rng: random.Random, invalid: bool) -> object:
    args = generate(tool.schema, rng)
    return violate(tool.schema, args) if invalid else args


def plain_text(last_user: str, rng: random.Random, tool_results: tuple[str, ...] = ()) -> str:
    """A short sentence: a verdict word and a quote of the first words of the user's message, or
    of each tool result when the request ends with some.

    >>> plain_text("  hello   there  ", random.Random(3))
    'Negative. You said: "hello there".'
    >>> plain_text("weather?", random.Random(3), ("sunny, 21 C", "rain"))
    'Negative. The tools said: "sunny, 21 C"; "rain".'
    """
    if tool_results:
        quotes = "; ".join(f'"{_quote(result)}"' for result in tool_results)
        return f"{rng.choice(_LEADS)} The tools said: {quotes}."
    return f'{rng.choice(_LEADS)} You said: "{_quote(last_user) or "nothing"}".'


def _quote(text: str) -> str:
    words = text.replace('"', "'").split()
    return " ".join(words[:_ECHO_WORDS]) + (" …" if len(words) > _ECHO_WORDS else "")


def lengthened(text: str, words: int) -> str:
    """``text`` cut or filled up to ``words`` words, so a stream has that many deltas.

    >>> lengthened("Sure. You said: 'hi'.", 7)
    "Sure. You said: 'hi'. and so on"
    """
    have = text.split()
    filler = ("and", "so", "on", "as", "the", "model", "goes")
    have += [filler[i % len(filler)] for i in range(max(0, words - len(have)))]
    return " ".join(have[:words])


def _chosen_tools(chat: Chat, *, again: bool) -> tuple[Tool, ...]:
    if chat.forced_tool is not None:
        return tuple(t for t in chat.tools if t.name == chat.forced_tool)[:1]
    if not chat.tools or chat.tool_mode == "none":
        return ()
    if chat.tool_mode == "auto" and chat.after_tool_result and not again:
        return ()
    return chat.tools


def _clipped(chat: Chat, text: str) -> Answer:
    """Honour ``max_tokens`` the way models do: stop mid-sentence with finish reason length."""
    if chat.max_tokens is not None and tokens.estimate(text) > chat.max_tokens:
        return _answer(chat, text[: chat.max_tokens * 4], "length")
    return _answer(chat, text)


def _answer(chat: Chat, text: str | None, finish: Finish = "stop",
            tool_calls: tuple[ToolCall, ...] = ()) -> Answer:
    answer = Answer(text, chat.prompt_tokens, 0, finish, tool_calls)
    return dataclasses.replace(answer, completion_tokens=tokens.estimate(answer.payload))
