"""Server-sent events framing: bytes as they arrive in, complete events out, memory bounded.

Both providers stream their answers as ``text/event-stream``: lines of ``field: value`` with a
blank line ending each event, ``:`` starting a comment (keep-alives). :class:`SSEParser` is fed
whatever the socket gave (an event may be split anywhere, even inside ``\\r\\n`` or a UTF-8
character) and returns the events completed so far; ``id:`` and ``retry:`` are ignored (a
completion is never resumed).

Why a hand parser and not a library's: measured by ``python -m bench.sse_parsers`` (200-token
OpenAI-shaped streams; 2 cores shared with other jobs at load ~2, so noisy: ranges of 3 runs). One
read per event, the usual case when tokens come at their pace (taken by a fast path: one
``data:`` line and nothing else): this parser 1.3–2.0 µs/event (3.8–5.4 before the fast path),
httpx-sse's decoder 3.9–7.6 µs, the openai SDK's (private) ``SSEDecoder`` 8.1–10 µs. Five events
per read (a busy client): 2.1–4.9 µs against 2.8–4.8 and 7.2–8.4. In 7-byte reads: about level with
httpx-sse (34–39 against 46–59 µs), ahead of the SDK (59–71 µs). All three give the same events
on every split of the test streams (``tests/test_sse.py``); this one is kept as the fastest in the
usual case, with no dependency (httpx-sse also wants text: an incremental UTF-8 decoder in front
of it).

>>> parser = SSEParser()
>>> parser.feed(b'event: ping\\ndata: {"a"') + parser.feed(b': 1}\\n\\n: keep-alive\\n\\ndata: [DONE]\\n\\n')
[Event(name='ping', data=b'{"a": 1}'), Event(name=None, data=b'[DONE]')]
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ProviderError

__all__ = ["MAX_EVENT_BYTES", "Event", "SSEParser"]

#: Largest event accepted (1 MiB): a stream that sends more without a blank line is not SSE.
MAX_EVENT_BYTES = 1 << 20


class Event(NamedTuple):
    """One server-sent event: its ``event:`` name (None when unnamed) and its data lines joined
    by ``\\n``, as bytes (``json.loads`` takes bytes)."""

    name: str | None
    data: bytes


def _unnamed(fields: tuple[None, bytes]) -> Event:
    return tuple.__new__(Event, fields)  # as Event(*fields), without its Python-level __new__


class SSEParser:
    """Incremental ``text/event-stream`` parser; :meth:`feed` bytes, get the completed events."""

    __slots__ = ("_buffer", "_limit", "_skip_lf")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._limit = max_event_bytes
        self._skip_lf = False

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data``; a partial event waits for the next feed.

        Raises :class:`~greenagents.errors.ProviderError` when one event grows past the limit.
        """
        if (not self._buffer and not self._skip_lf and data.endswith(b"\n\n")
                and data.startswith(b"data: ") and data.find(b"\n") == len(data) - 2
                and b"\r" not in data):  # most reads: one event of one data line, nothing else
            return [_unnamed((None, data[6:-2]))]
        if self._skip_lf:  # the last feed ended with a CR: a LF now is the rest of its CRLF
            self._skip_lf = False
            if data.startswith(b"\n"):
                data = data[1:]
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:  # rare: CRLF or CR line ends
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[Event] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            if buffer.startswith(b"data: ", start) and buffer.find(b"\n", start, end) < 0:
                events.append(_unnamed((None, buffer[start + 6:end])))  # one data line: most
            else:
                event = _event(buffer[start:end])
                if event is not None:
                    events.append(event)
            start = end + 2
        self._buffer = buffer[start:] if start else buffer
        if len(self._buffer) > self._limit:
            raise ProviderError(f"a server-sent event grew past {self._limit} bytes without "
                                "ending; the server is not streaming events (check the base URL)")
        return events


def _event(block: bytes) -> Event | None:
    """The event of one block of lines (no blank line inside), or None for comments only."""
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            value = line[6:]
            name = (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")
        elif line == b"data":  # a field with no colon has an empty value
            data.append(b"")
    if not data:
        return None  # the spec dispatches nothing for an event without data
    return Event(name, data[0] if len(data) == 1 else b"\n".join(data))
