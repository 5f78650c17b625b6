"""Streamed answers: each provider's events turned into text deltas and, at the end, a Completion.

Like the rest of ``providers/`` this only translates; :func:`open_stream` joins it to the I/O
(:func:`greenagents.http_stream.open_stream`) and the SSE framing (:mod:`greenagents.sse`).

- OpenAI: ``stream: true`` with ``stream_options.include_usage``; ``chat.completion.chunk`` events
  carry ``choices[0].delta.content``, or ``delta.tool_calls`` pieces (``index``; ``id`` and
  ``function.name`` once, then ``function.arguments`` a piece at a time), a last chunk the usage,
  then ``[DONE]``.
- Anthropic: ``stream: true``; ``message_start`` (input tokens), ``content_block_start`` (a
  ``text`` or ``tool_use`` block: id, name), ``content_block_delta`` (``text``, or a tool's input
  as ``partial_json`` pieces), ``message_delta`` (output tokens, stop reason), ``message_stop``; an
  ``error`` event is the provider failing mid-stream.

Tool calls the model asks for are collected, not given as text, when the request offered tools
(``tools=True``); the structured-output tool (Anthropic's forced ``answer_tool``; any tool call of
a request that offered none) is the answer, so its arguments are the text.

>>> reader = OpenAIReader()
>>> reader.feed(Event(None, b'{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}'))
'Hi'
>>> reader.feed(Event(None, b'[DONE]')), reader.done
('', True)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pydantic_core import from_json

from ..errors import ProviderError, ServerError
from ..http_stream import ByteStream
from ..http_stream import open_stream as open_bytes
from ..result import Usage
from ..sse import Event, SSEParser
from .anthropic import AnthropicProvider
from .base import Completion, Message, Provider, ToolRequest, error_message

__all__ = ["AnthropicReader", "OpenAIReader", "Reader", "TextStream", "open_stream"]


class Reader:
    """Reads one provider's events: :meth:`feed` returns the text each adds ("" for none).

    Events are parsed by pydantic-core's ``from_json``: 1.3–1.6 µs for a 280-byte OpenAI chunk,
    against 5.5 µs for ``json.loads`` (medians of 11 interleaved runs on the shared 2-core machine,
    so only the ratios hold). Measured and not kept: orjson (1.0–1.2 µs alone, no difference
    to be seen per streamed token, and optional) and an exact regular expression for the usual
    content-only chunk (1.8–2.0 µs: no faster than parsing it).
    """

    def __init__(self, *, tools: bool = False, answer_tool: str | None = None) -> None:
        self.parts: list[str] = []
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.model = ""
        self.finish_reason: str | None = None
        self.done = False
        self.deltas = 0
        self.tools, self.answer_tool = tools, answer_tool
        self.calls: dict[int, tuple[str, str, list[str]]] = {}  # by index: id, name, pieces

    def feed(self, event: Event) -> str:
        raise NotImplementedError

    def tool_calls(self) -> tuple[ToolRequest, ...]:
        """The tool calls the model asked for, their arguments whole (as the provider's
        non-streamed answer gives them: OpenAI's JSON text, Anthropic's object)."""
        if not self.calls:
            return ()
        return tuple(ToolRequest(id, name, self._arguments("".join(pieces)))
                     for id, name, pieces in self.calls.values())

    def _arguments(self, text: str) -> str | dict[str, Any]:
        return text

    def usage(self, estimated_prompt: int) -> Usage:
        """What the provider reported; what was seen when it did not (a stream cut short): the
        prompt as estimated and one token per delta received."""
        prompt = self.prompt_tokens if self.prompt_tokens is not None else estimated_prompt
        completion = self.completion_tokens if self.completion_tokens is not None else self.deltas
        return Usage(prompt, completion)

    def completion(self, estimated_prompt: int) -> Completion:
        return Completion("".join(self.parts), self.usage(estimated_prompt), self.model,
                          self.finish_reason, self.tool_calls())

    def _text(self, text: str) -> str:
        if text:
            self.parts.append(text)
            self.deltas += 1
        return text


class OpenAIReader(Reader):
    """``chat.completion.chunk`` events, until ``[DONE]``."""

    def feed(self, event: Event) -> str:
        if event.data == b"[DONE]":
            self.done = True
            return ""
        chunk = from_json(event.data)
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            finish = choice.get("finish_reason")
            if finish:
                self.finish_reason = finish
            delta = choice.get("delta")
            if delta:
                text = delta.get("content") or delta.get("refusal")  # as Completion.text
                if text:  # most chunks: a piece of text, nothing else to look at...
                    self.parts.append(text)
                    self.deltas += 1
                    if finish or not self.model:  # ...but the last may carry the usage
                        self._meta(chunk)
                    return text  # type: ignore[no-any-return]
                calls = delta.get("tool_calls")
                if calls:
                    return self._calls(calls)
        self._meta(chunk)
        return ""

    def _meta(self, chunk: dict[str, Any]) -> None:
        if chunk.get("error"):
            raise _stream_error(chunk)
        usage = chunk.get("usage")
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
        self.model = chunk.get("model") or self.model

    def _calls(self, calls: list[dict[str, Any]]) -> str:
        if not self.tools:  # structured output answered as a tool call: the arguments are the JSON
            return self._text(calls[0].get("function", {}).get("arguments") or "")
        for call in calls:
            function = call.get("function") or {}
            index = call.get("index", 0)
            if index not in self.calls:
                self.calls[index] = (call.get("id") or "", function.get("name") or "", [])
            self.calls[index][2].append(function.get("arguments") or "")
        return ""


class AnthropicReader(Reader):
    """Messages events, until ``message_stop``."""

    def feed(self, event: Event) -> str:
        payload = from_json(event.data)
        kind = payload.get("type")
        if kind == "content_block_delta":
            delta = payload["delta"]
            text = delta.get("text")
            if text is None:
                text = delta.get("partial_json")
                call = self.calls.get(payload.get("index", 0))
                if call is not None and text is not None:  # a tool's input, a piece at a time
                    call[2].append(text)
                    return ""
            return self._text(text or "")
        if kind == "content_block_start":
            block = payload["content_block"]
            if block.get("type") == "tool_use" and self.tools and block["name"] != self.answer_tool:
                self.calls[payload.get("index", 0)] = (block["id"], block["name"], [])
        elif kind == "message_start":
            message = payload["message"]
            usage = message.get("usage") or {}
            self.model = message.get("model") or ""
            self.prompt_tokens = sum(int(usage.get(k) or 0) for k in (
                "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        elif kind == "message_delta":
            self.completion_tokens = int((payload.get("usage") or {}).get("output_tokens") or 0)
            self.finish_reason = (payload.get("delta") or {}).get("stop_reason")
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise _stream_error(payload)
        return ""

    def _arguments(self, text: str) -> str | dict[str, Any]:
        """The input object (``{}`` for none); text that is not one goes to the tool as it is,
        whose validation tells the model what is wrong."""
        try:
            given = from_json(text) if text else {}
        except ValueError:
            return text
        return given if isinstance(given, dict) else text


def _stream_error(payload: dict[str, Any]) -> ProviderError:
    """An error the provider sent as an event, after its 200: overloaded, mostly; retryable."""
    said = error_message(payload) or "an error event"
    return ServerError(f"the provider failed mid-stream ({said[:200]}); retrying usually helps")


class TextStream:
    """One streamed attempt: iterate for text deltas; :attr:`reader` holds what was read.

    The first tool call the model asks for (when the request offered tools) is marked by one
    ``""`` delta: the answer has begun, though with nothing to show.

    Bytes are read only as the iteration asks for them (nothing in between: no queue, no extra
    greenlet); :meth:`close` abandons the answer (the connection is closed, the server sees it).
    What a delta costs, socket read to the caller's loop, over geventhttpclient at 50 tokens/s
    (each token its own read): ~30–33 µs of client CPU per token, a raw-socket gevent client
    ~24 µs, and 44–52 µs before reads were bounded without a timer per wait and the SSE, HTTP
    and delta layers took their fast paths; of it, the parsing here (SSE, JSON, this loop) is
    3.5–5.5 µs. Medians of 3 alternating runs each of ``stream_ab.py ga 200 {100,200,20} 50``
    (CPU of the longer run minus the shorter's, per extra token), 2 cores shared with other
    jobs at load 2–3, so ±5 µs.
    """

    def __init__(self, body: ByteStream, reader: Reader, provider: Provider) -> None:
        self.body, self.reader, self.provider = body, reader, provider

    def __iter__(self) -> Iterator[str]:
        reader, parser, calling = self.reader, SSEParser(), False
        try:
            for chunk in self.body.chunks():  # read to the body's end, so the connection is reused
                for event in parser.feed(chunk):
                    if reader.done:
                        break
                    text = reader.feed(event)
                    if text:
                        yield text
                    elif not calling and reader.calls:
                        calling = True
                        yield ""  # a tool call began: the answer's first sign of life
        except ValueError as exc:  # a JSON event that does not parse: the stream is garbled
            raise ServerError(f"{self.provider.name} sent a malformed stream event ({exc}); "
                              "retrying usually helps", provider=self.provider.name) from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderError(f"{self.provider.name} sent a stream event without the expected "
                                f"fields ({exc!s}); is the base URL a {self.provider.name}-"
                                "compatible API?", provider=self.provider.name) from None
        finally:
            self.body.close()  # finished: back to the pool; cut short or failed: closed
        if not reader.done:
            raise ServerError(f"{self.provider.name} ended the stream before its end (after "
                              f"{reader.deltas} deltas); retrying usually helps",
                              provider=self.provider.name)

    def close(self) -> None:
        self.body.close()


class _Whole(Reader):
    """What a server that ignored ``stream: true`` answered, whole."""

    def __init__(self, completion: Completion, *, tools: bool) -> None:
        super().__init__(tools=tools)
        self.asked = completion.tool_calls if tools else ()
        if not self.asked or completion.text != _as_text(self.asked[0].arguments):
            self._text(completion.text)  # not just the first call's arguments standing in for it
        self.prompt_tokens = completion.usage.prompt_tokens
        self.completion_tokens = completion.usage.completion_tokens
        self.model, self.finish_reason, self.done = completion.model, completion.finish_reason, True

    def tool_calls(self) -> tuple[ToolRequest, ...]:
        return self.asked


def _as_text(arguments: str | Mapping[str, Any]) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


class _WholeStream(TextStream):
    """A server that ignored ``stream: true`` and answered whole: one delta, the whole text."""

    def __iter__(self) -> Iterator[str]:
        yield from self.reader.parts


def open_stream(provider: Provider, model: str, messages: Sequence[Message], *,
                schema: dict[str, Any] | None = None, schema_name: str = "output",
                temperature: float | None = None, max_tokens: int | None = None,
                timeout: float | None = None, tools: Sequence[Mapping[str, Any]] = (),
                on_response: Callable[[ByteStream], None] | None = None) -> TextStream:
    """Send a streaming request; return once the answer's headers are in.

    An error status raises the mapped :class:`~greenagents.errors.ProviderError`, as
    :func:`greenagents.providers.complete` does; ``on_response`` sees the answer's status and
    headers first, whatever the status (the learned rate limits read them).
    """
    request = provider.build(model, messages, schema=schema, schema_name=schema_name,
                             temperature=temperature, max_tokens=max_tokens, tools=tools)
    body = dict(request.body, stream=True)
    anthropic = isinstance(provider, AnthropicProvider)
    if not anthropic:
        body["stream_options"] = {"include_usage": True}
    stream = open_bytes(request.url, body, request.headers, timeout=timeout,
                        provider=provider.name, hint=f"check {provider.base_url_env}")
    if on_response is not None:
        on_response(stream)
    if not 200 <= stream.status < 300 or not stream.is_event_stream:
        whole = _Whole(provider.parse(stream.whole()), tools=bool(tools))
        return _WholeStream(stream, whole, provider)
    reader = AnthropicReader(tools=bool(tools), answer_tool=schema_name if schema else None) \
        if anthropic else OpenAIReader(tools=bool(tools))
    return TextStream(stream, reader, provider)
