"""The provider-neutral shapes the simulator works with between parsing and rendering.

Each provider module (``openai_api``, ``anthropic_api``) only translates: its request body becomes a
:class:`Chat`, and an :class:`Answer` becomes its response body or stream. Everything in between —
composing answers, faults, latency, limits — is written once against these types.

>>> chat = Chat(model="m", prompt="hi", last_user="hi", prompt_tokens=5)
>>> chat.tool_mode
'none'
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Literal, Protocol

from greenagents import tokens

Schema = dict[str, Any]
ToolMode = Literal["none", "auto", "required"]
Finish = Literal["stop", "length", "tool"]
ErrorKind = Literal["invalid_request", "authentication", "not_found", "method_not_allowed",
                    "rate_limit", "server_error", "overloaded", "quota"]

#: One server-sent event, already encoded, and the output tokens it carries (for pacing).
Event = tuple[bytes, int]

#: HTTP status per error kind; a dialect may override some (Anthropic's 529 for overloaded).
#: ``quota`` is an account out of credit: OpenAI says 429 (``insufficient_quota``), Anthropic 400.
STATUS: dict[ErrorKind, int] = {
    "invalid_request": 400, "authentication": 401, "not_found": 404, "method_not_allowed": 405,
    "rate_limit": 429, "server_error": 500, "overloaded": 503, "quota": 429,
}


class InvalidRequest(ValueError):
    """The request body cannot be served; the message goes back to the client verbatim."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name and the JSON schema of its arguments."""

    name: str
    schema: Schema


@dataclass(frozen=True)
class Chat:
    """What the simulator needs to know about one completion request, whatever its provider."""

    model: str
    prompt: str
    last_user: str
    prompt_tokens: int
    schema: Schema | None = None
    json_mode: bool = False
    tools: tuple[Tool, ...] = ()
    tool_mode: ToolMode = "none"
    forced_tool: str | None = None
    after_tool_result: bool = False
    tool_results: tuple[str, ...] = ()  # the texts of the tool results the request ends with
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None


@dataclass(frozen=True)
class ToolCall:
    """One tool call of an answer: its id, the tool's name and the arguments object."""

    id: str
    name: str
    arguments: Any

    @property
    def json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Answer:
    """The simulated model's reply: text, or tool calls (one or several), plus its token usage."""

    text: str | None
    prompt_tokens: int
    completion_tokens: int
    finish: Finish = "stop"
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def tool_name(self) -> str | None:
        """The first tool call's name (None for a text answer)."""
        return self.tool_calls[0].name if self.tool_calls else None

    @property
    def tool_args(self) -> Any:
        """The first tool call's arguments object (None for a text answer)."""
        return self.tool_calls[0].arguments if self.tool_calls else None

    @property
    def payload(self) -> str:
        """The generated characters: the text, or the tool calls' arguments as JSON."""
        return self.text if self.text is not None else "".join(c.json for c in self.tool_calls)


class Dialect(Protocol):
    """One provider's wire format. Implementations translate and never sleep or do I/O."""

    name: str

    def parse(self, body: Any) -> Chat:
        """Validate a request body; raise :class:`InvalidRequest` with a client-facing message."""
        ...

    def render(self, chat: Chat, answer: Answer) -> dict[str, Any]:
        """The non-streaming response body."""
        ...

    def events(self, chat: Chat, answer: Answer) -> Iterator[Event]:
        """The streaming response, one server-sent event at a time."""
        ...

    def error(self, kind: ErrorKind, message: str) -> tuple[int, dict[str, Any]]:
        """Status and body of an error in this provider's shape."""
        ...

    def models(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The body of ``GET /v1/models``."""
        ...

    def api_key(self, headers: dict[str, str]) -> str | None:
        """The API key the client sent (lower-cased header names), or None."""
        ...


def flat_text(content: Any) -> str:
    """Flatten message content (a string, or a list of typed parts/blocks) to its text.

    >>> flat_text([{"type": "text", "text": "a"}, {"type": "tool_result", "content": "b"}])
    'a\\nb'
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(flat_text(part) for part in content if flat_text(part))
    if isinstance(content, dict):
        return flat_text(content.get("text", content.get("content", "")))
    return ""


def pieces(text: str) -> list[str]:
    """Split text into word-sized stream deltas that concatenate back to ``text``.

    >>> pieces("a b  c")
    ['a ', 'b  ', 'c']
    """
    return re.findall(r"\S+\s*|\s+", text) or [""]


def sse(data: Any, event: str | None = None) -> bytes:
    """Encode one server-sent event; ``data`` is JSON-encoded unless it is already a string."""
    line = data if isinstance(data, str) else _COMPACT.encode(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {line}\n\n".encode()


#: ``json.dumps(data, separators=(",", ":"))`` without making an encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))

#: Where :func:`sse_stamp`'s piece goes: random, so no request can smuggle it into an envelope.
PIECE = f"\x00piece-{uuid.uuid4().hex}\x00"


def sse_stamp(data: Any, event: str | None = None) -> Callable[[str], bytes]:
    """:func:`sse` for a stream's run of events that differ only in one string: ``data`` holds
    :data:`PIECE` where the string goes, and the stamp returned turns a piece into its event.

    A streamed answer is hundreds of such events; encoding the envelope once and only the piece
    per event makes the same bytes (a JSON string encodes the same wherever it sits) at a fraction
    of the CPU, which the simulator needs to pace thousands of streams at once.

    >>> stamp = sse_stamp({"delta": {"text": PIECE}, "n": 1}, "delta")
    >>> stamp('a "b"') == sse({"delta": {"text": 'a "b"'}, "n": 1}, "delta")
    True
    """
    head, hole, tail = sse(data, event).partition(json.dumps(PIECE).encode())
    if not hole:
        raise ValueError("sse_stamp: data does not hold PIECE")
    # json.dumps(piece) without its per-call set-up: the same C encoder, the same bytes
    return lambda piece: head + encode_basestring_ascii(piece).encode() + tail


def bearer_token(headers: dict[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (lower-cased header names), or None.

    >>> bearer_token({"authorization": "Bearer sk-1"}), bearer_token({})
    ('sk-1', None)
    """
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def digest(*parts: object) -> int:
    """A stable 64-bit integer from the parts: the simulator's only source of randomness seeds.

    >>> digest(0, "x") == digest(0, "x") != digest(1, "x")
    True
    """
    raw = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def message_prompt(messages: list[Any], system: str = "") -> tuple[str, int]:
    """All text a request sends and its token estimate (four tokens of overhead per message)."""
    texts = [system] if system else []
    texts += [flat_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return "\n".join(texts), tokens.estimate_prompt(texts)
