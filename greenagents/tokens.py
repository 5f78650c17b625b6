"""Token estimates without a tokenizer, the same on both sides of the wire.

The client paces its tokens-per-minute rate limits and prices a budget's next call before any
answer says what was used; the simulator counts the prompts it is sent against *its* limits. Both
estimate from here, so a client configured with the simulator's tpm neither trips its 429s nor
leaves room unused: four characters a token, plus a few tokens of framing per message.

>>> estimate_messages([{"role": "system", "content": "Be brief."},
...                    {"role": "user", "content": [{"type": "text", "text": "hi"}]}])
11
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CHARS_PER_TOKEN", "PER_MESSAGE", "estimate", "estimate_messages", "estimate_prompt",
           "text_of"]

#: Characters per token, the rule of thumb providers publish for English text.
CHARS_PER_TOKEN = 4
#: Tokens a message costs beyond its text (role and separators).
PER_MESSAGE = 4


def estimate(text: str) -> int:
    """Tokens in ``text``: one per :data:`CHARS_PER_TOKEN` characters, rounded up, at least one.

    >>> estimate("four"), estimate("eight ch"), estimate("")
    (1, 2, 1)
    """
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def estimate_prompt(texts: Sequence[str]) -> int:
    """Tokens of a prompt made of these message texts, framing included."""
    return estimate("\n".join(texts)) + PER_MESSAGE * len(texts)


def estimate_messages(messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens of provider-neutral messages (``{"role", "content"}``), framing included."""
    return estimate_prompt([text_of(m.get("content")) for m in messages])


def text_of(content: str | Sequence[Mapping[str, Any]] | None) -> str:
    """The text of a message's content, whether a string or a list of parts (images skipped).

    >>> text_of([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}])
    'a\\nb'
    """
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part["text"] for part in content if part.get("type") == "text")
