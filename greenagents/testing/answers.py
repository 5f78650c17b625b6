"""What the simulated model says: deterministic text, structured JSON or a tool call.

Answers depend only on the seed and the request's text, so a test can compute what to expect by
sending the same prompt twice, and a plain answer quotes the start of the last user message so a
test can see the right prompt arrived.

>>> from greenagents.testing.wire import Chat
>>> compose(Chat(model="m", prompt="I love it", last_user="I love it", prompt_tokens=7), seed=0).text
'Understood. You said: "I love it".'
"""

from __future__ import annotations

import dataclasses
import json
import random

from greenagents.testing.prompted import field_answer, output_fields, schema_in_prompt
from greenagents.testing.schema import generate, violate
from greenagents.testing.wire import Answer, Chat, Finish, Tool, count_tokens, digest

_LEADS = ("Positive.", "Negative.", "Neutral.", "Sure.", "Understood.", "Noted.")
_ECHO_WORDS = 8


def compose(chat: Chat, seed: int, *, invalid: bool = False) -> Answer:
    """The answer to ``chat``; ``invalid`` breaks its schema (the ``schema_invalid`` fault).

    Tool calls win over text when the request allows them, except that ``tool_choice="auto"``
    answers in text once the conversation already holds a tool result, so agent loops end.
    """
    rng = random.Random(digest(seed, chat.model, chat.prompt))
    tool = _chosen_tool(chat, rng)
    if tool is not None:
        args = generate(tool.schema, rng)
        args = violate(tool.schema, args) if invalid else args
        return _answer(chat, None, "tool", tool_name=tool.name, tool_args=args)
    if chat.schema is not None:
        value = generate(chat.schema, rng)
        return _answer(chat, json.dumps(violate(chat.schema, value) if invalid else value))
    text = plain_text(chat.last_user, rng)
    if chat.json_mode:  # a schema in the prompt (instructor's Mode.JSON) is what to follow
        schema = schema_in_prompt(chat.prompt)
        return _answer(chat, json.dumps({"answer": text} if schema is None else generate(schema, rng)))
    fields = output_fields(chat.prompt)  # DSPy's [[ ## field ## ]] sections
    return _clipped(chat, text if fields is None else field_answer(chat.prompt, fields, text))


def plain_text(last_user: str, rng: random.Random) -> str:
    """A short sentence: a verdict word and a quote of the first words of the user's message.

    >>> plain_text("  hello   there  ", random.Random(3))
    'Negative. You said: "hello there".'
    """
    words = last_user.replace('"', "'").split()
    echo = " ".join(words[:_ECHO_WORDS]) + (" …" if len(words) > _ECHO_WORDS else "")
    return f'{rng.choice(_LEADS)} You said: "{echo or "nothing"}".'


def _chosen_tool(chat: Chat, rng: random.Random) -> Tool | None:
    if chat.forced_tool is not None:
        return next(t for t in chat.tools if t.name == chat.forced_tool)
    if not chat.tools or chat.tool_mode == "none":
        return None
    if chat.tool_mode == "auto" and chat.after_tool_result:
        return None
    return rng.choice(chat.tools)


def _clipped(chat: Chat, text: str) -> Answer:
    """Honour ``max_tokens`` the way models do: stop mid-sentence with finish reason length."""
    if chat.max_tokens is not None and count_tokens(text) > chat.max_tokens:
        return _answer(chat, text[: chat.max_tokens * 4], "length")
    return _answer(chat, text)


def _answer(chat: Chat, text: str | None, finish: Finish = "stop", tool_name: str | None = None,
            tool_args: object = None) -> Answer:
    answer = Answer(text, chat.prompt_tokens, 0, finish, tool_name, tool_args)
    return dataclasses.replace(answer, completion_tokens=count_tokens(answer.payload))
