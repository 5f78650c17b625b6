"""The SSE parser against the spec's corner cases and the openai SDK's decoder, on every split."""

from __future__ import annotations

import pytest

from bench.sse_parsers import openai_sdk, openai_stream, ours
from greenagents.errors import ProviderError
from greenagents.sse import Event, SSEParser

STREAMS = {
    "openai": openai_stream(5),
    "anthropic": (b'event: message_start\ndata: {"type":"message_start"}\n\n'
                  b'event: ping\ndata: {"type": "ping"}\n\n'
                  b'event: content_block_delta\ndata: {"text":"h\xc3\xa9"}\n\n'),
    "comments and blank lines": b": keep-alive\n\n\n\ndata: a\n: inside\ndata:b\n\n:\n\n",
    "crlf": b"event: x\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
    "cr": b"data: 1\r\rdata: 2\r\r",
    "multi-line data": b"data: {\ndata:  \"k\": 1\ndata: }\n\n",
    "id and retry ignored": b"id: 7\nretry: 100\ndata: x\n\n",
    "a cr inside a one-line event": b"data: a\rb\n\ndata: c\n\n",
    "empty and spaced data": b"data: \n\ndata:  two spaces\n\ndata: [DONE]\n\n",
}


@pytest.mark.parametrize("name", STREAMS)
def test_every_split_gives_the_events_of_the_whole(name: str) -> None:
    body = STREAMS[name]
    whole = ours([body])
    assert whole == openai_sdk([body])
    for cut in range(1, len(body)):
        assert ours([body[:cut], body[cut:]]) == whole, cut
    assert ours([body[i:i + 1] for i in range(len(body))]) == whole


@pytest.mark.parametrize("name", STREAMS)
def test_one_read_per_event_gives_the_events_of_the_whole(name: str) -> None:
    """The usual case (a read per event, taken by a fast path), also with each event's end in
    the next read."""
    body = STREAMS[name]
    events = [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]
    assert ours(events) == ours([b"".join(events)])
    moved = [events[0][:-1]] + [b"\n" + event[:-1] for event in events[1:]] + [b"\n"]
    assert ours(moved) == ours([b"".join(events)])


def test_events_keep_name_and_data() -> None:
    assert SSEParser().feed(STREAMS["comments and blank lines"]) == [Event(None, b"a\nb")]
    assert SSEParser().feed(STREAMS["crlf"]) == [Event("x", b"1"), Event(None, b"2")]


def test_an_unfinished_event_is_held_back() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DO") == []
    assert parser.feed(b"NE]\n") == []
    assert parser.feed(b"\n") == [Event(None, b"[DONE]")]


def test_an_event_that_never_ends_is_an_error_not_unbounded_memory() -> None:
    parser = SSEParser(max_event_bytes=100)
    parser.feed(b"data: " + b"x" * 90)
    with pytest.raises(ProviderError, match="grew past 100 bytes"):
        parser.feed(b"x" * 20)
