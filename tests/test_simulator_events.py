"""The simulator's streamed bytes over real HTTP: every event as :func:`sse` encodes its JSON.

A stream's per-token events are stamped from an envelope encoded once (``sse_stamp``), and they go
out through a direct socket write that falls back to gevent's when the socket is full; these tests
read the raw stream and check both against the plain encoder and the whole answer.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import gevent
import pytest
import requests

from greenagents.testing import Simulator
from greenagents.testing.shapes import sse

UNICODE = 'héllo wörld ☃ — “quotes” \\ back "dq" \t tab 😀 请用中文回答'
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def _events(raw: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in raw.split(b"\n\n") if event]


def _reencoded(event: bytes) -> bytes:
    """The event as ``sse`` renders the JSON it carries (its own name kept)."""
    lines = event.decode().rstrip("\n").split("\n")
    name = lines[0].removeprefix("event: ") if lines[0].startswith("event: ") else None
    data = lines[-1].removeprefix("data: ")
    return sse(data if data == "[DONE]" else json.loads(data), name)


def _stream(sim: Simulator, path: str, body: dict[str, Any]) -> bytes:
    headers = {"Authorization": "Bearer sk-test", "anthropic-version": "2023-06-01"}
    with requests.post(f"{sim.url}{path}", json={**body, "stream": True}, headers=headers,
                       stream=True, timeout=30) as response:
        assert response.status_code == 200
        return b"".join(response.iter_content(None))


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool-calls"])
def test_openai_stream_events_are_sse_of_their_json(sim: Simulator, tools: bool) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}}
    if tools:
        extra |= {"tools": [{"type": "function", "function": {"name": "weather",
                                                               "parameters": WEATHER}}],
                  "tool_choice": "required"}
    raw = _stream(sim, "/v1/chat/completions", {"model": "gpt-4o-mini", **extra,
                                                "messages": [{"role": "user", "content": UNICODE}]})
    events = _events(raw)
    assert [_reencoded(e) for e in events] == events
    deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in events[1:-3]]
    key = "tool_calls" if tools else "content"
    assert len(deltas) > 3 and all(key in delta for delta in deltas)
    if not tools:
        assert "☃" in "".join(delta["content"] for delta in deltas)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool-use"])
def test_anthropic_stream_events_are_sse_of_their_json(sim: Simulator, tools: bool) -> None:
    extra: dict[str, Any] = {}
    if tools:
        extra = {"tools": [{"name": "weather", "input_schema": WEATHER}],
                 "tool_choice": {"type": "any"}}
    raw = _stream(sim, "/v1/messages", {"model": "claude-3-5-haiku-latest", "max_tokens": 500,
                                        **extra, "messages": [{"role": "user", "content": UNICODE}]})
    events = _events(raw)
    assert [_reencoded(e) for e in events] == events
    deltas = [e for e in events if e.startswith(b"event: content_block_delta")]
    assert len(deltas) > 3
    assert (b"input_json_delta" if tools else b"text_delta") in deltas[0]


def test_a_stream_larger_than_the_socket_buffer_arrives_whole(sim_factory: Any) -> None:
    """The direct write sends what fits and leaves the rest to gevent's ``sendall``."""
    sim = sim_factory(answer_words=20_000)  # ~3 MB, in one write (every token is due at once)
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer "
                     b"sk-test\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        gevent.sleep(0.5)  # not reading yet: the simulator's write meets a full socket
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    stream = b""
    while True:  # undo the chunked framing by hand: every chunk must be intact
        size, _, rest = chunked.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            break
        stream, chunked = stream + rest[:length], rest[length + 2:]
        assert rest[length:length + 2] == b"\r\n"
    events = _events(stream)
    assert len(events) > 20_000 and events[-1] == b"data: [DONE]\n\n"
    assert [_reencoded(e) for e in events[::997]] == events[::997]
