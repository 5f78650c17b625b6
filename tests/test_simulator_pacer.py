"""The simulator's pacer (greenagents.testing.pacer): one greenlet writes every stream's due
events straight to its socket. Real HTTP over 127.0.0.1: what arrives must be what the model's
schedule says, whole, whoever writes it (the pacer, the stream's own greenlet, gevent's
``sendall`` when the socket is full)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import gevent
import gevent.pywsgi
import openai
import pytest
import requests

from greenagents.testing.options import SimOptions
from greenagents.testing.pacer import BATCH, Pacer, Stream
from greenagents.testing.server import SimApp
from greenagents.testing.shapes import sse

WORDS, PER_TOKEN = 60, 0.005  # a paced answer of 60 deltas, 0.3 s


def _request(path: str, body: dict[str, Any], version: str = "1.1") -> bytes:
    raw = json.dumps(body).encode()
    return (f"POST {path} HTTP/{version}\r\nHost: sim\r\nAuthorization: Bearer sk-test\r\n"
            f"anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\nContent-Length: {len(raw)}\r\n\r\n").encode() + raw


def _exchange(url: str, request: bytes, *, receive_buffer: int | None = None,
              wait: float = 0.0) -> tuple[bytes, bytes]:
    """Send ``request`` on a raw socket, read to EOF; return the head and the body (HTTP/1.1
    chunks joined, each checked intact)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        if receive_buffer:  # a slow reader with a small window: the server's sends meet a full socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect((host, int(port)))
        sock.sendall(request)
        gevent.sleep(wait)
        raw = b"".join(iter(lambda: sock.recv(1024 if receive_buffer else 65536), b""))
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"Transfer-Encoding: chunked" not in head:
        return head, body
    joined = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            assert rest == b"\r\n"  # the last chunk, then nothing
            return head, joined
        assert rest[length:length + 2] == b"\r\n"
        joined, body = joined + rest[:length], rest[length + 2:]


def _events(stream: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in stream.split(b"\n\n") if event]


def _text(events: list[bytes]) -> str:
    """The content deltas of an OpenAI stream, joined."""
    chunks = [json.loads(e[6:]) for e in events if e != b"data: [DONE]\n\n"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


CHAT = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "héllo ☃ \"quoted\" 😀"}]}


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_paced_stream_is_the_unpaced_one_spread_out(sim_factory: Any, version: str) -> None:
    """Same events, same text, same usage as the answer sent at once; only the timing differs
    (HTTP/1.0 gets no chunked framing from the pacer either)."""
    paced = sim_factory(answer_words=WORDS, token_latency=PER_TOKEN)
    at_once = sim_factory(answer_words=WORDS)
    request = _request("/v1/chat/completions", CHAT, version)
    started = time.monotonic()
    head, body = _exchange(paced.url, request)
    took = time.monotonic() - started
    events = _events(body)
    expected = _events(_exchange(at_once.url, request)[1])
    assert (b"chunked" in head) == (version == "1.1")
    assert [sse(json.loads(e[6:])) if e[6:] != b"[DONE]\n\n" else e for e in events] == events
    assert _text(events) == _text(expected) and len(events) == len(expected) == WORDS + 4
    assert json.loads(events[-2][6:])["usage"] == json.loads(expected[-2][6:])["usage"]
    assert took >= WORDS * PER_TOKEN  # paced: never sooner than the schedule
    assert paced.stats()["by_status"] == {"200": 1}


def test_a_slow_reader_gets_the_whole_paced_stream(sim_factory: Any) -> None:
    """The pacer's write meets a full socket: the rest goes by the stream's own greenlet, and
    the pacer carries on with the events after it."""
    sim = sim_factory(answer_words=20_000, token_latency=0.00002)  # ~0.4 s, ~5 MB
    _, body = _exchange(sim.url, _request("/v1/chat/completions", CHAT),
                        receive_buffer=4096, wait=0.5)
    events = _events(body)
    assert len(events) == 20_000 + 4 and events[-1] == b"data: [DONE]\n\n"
    assert len(_text(events).split()) == 20_000
    assert sim.stats()["by_status"] == {"200": 1}


def test_many_paced_streams_at_once_through_the_sdk(sim_factory: Any) -> None:
    """200 streams share the pacer: every one whole, in ~one answer's time, first tokens
    recorded."""
    sim = sim_factory(answer_words=WORDS, token_latency=PER_TOKEN, latency=0.1)
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)

    def one(i: int) -> str:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"stream {i}"}],
            stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    started = time.monotonic()
    texts = [g.get() for g in gevent.joinall([gevent.spawn(one, i) for i in range(200)])]
    assert all(len(text.split()) == WORDS for text in texts)
    assert time.monotonic() - started < 200 * WORDS * PER_TOKEN / 4  # concurrent, not in turn
    first = requests.get(sim.url + "/_sim/first_tokens", timeout=10).json()
    assert sorted(first) == sorted(f"stream {i}" for i in range(200))
    assert sim.stats()["by_status"] == {"200": 200}


def test_a_client_gone_mid_stream_is_counted_disconnected(sim_factory: Any) -> None:
    sim = sim_factory(answer_words=200, token_latency=0.01)  # 2 s
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(_request("/v1/chat/completions", CHAT))
        assert b'"content":"' in sock.recv(65536) + sock.recv(65536)  # the pacer is writing
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    for _ in range(100):  # the next write finds the connection reset
        if sim.stats()["by_status"]:
            break
        gevent.sleep(0.05)
    assert sim.stats()["by_status"] == {"disconnected": 1} and sim.stats()["in_flight"] == 0


@pytest.mark.parametrize("fault", ["truncated", "malformed"])
def test_stream_faults_still_cut_and_garble_paced_streams(sim_factory: Any, fault: str) -> None:
    sim = sim_factory(answer_words=WORDS, token_latency=PER_TOKEN)
    request = _request("/v1/chat/completions", CHAT).replace(
        b"Connection: close\r\n", f"Connection: close\r\nX-Sim-Fault: {fault}\r\n".encode())
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    assert b"[DONE]" not in raw if fault == "truncated" else b"[DONE]" in raw
    assert not raw.endswith(b"0\r\n\r\n") if fault == "truncated" else raw.endswith(b"0\r\n\r\n")


def test_served_by_another_wsgi_server_the_stream_is_paced_by_its_own_greenlet() -> None:
    """Without the simulator's handler (no raw wire) every burst goes through the server."""
    server = gevent.pywsgi.WSGIServer(("127.0.0.1", 0), SimApp(SimOptions(
        answer_words=WORDS, token_latency=PER_TOKEN)), log=None)
    server.start()
    try:
        started = time.monotonic()
        _, body = _exchange(f"http://127.0.0.1:{server.server_port}",
                            _request("/v1/chat/completions", CHAT))
        assert time.monotonic() - started >= WORDS * PER_TOKEN
    finally:
        server.stop()
    assert len(_text(_events(body)).split()) == WORDS


class SocketWire:
    """The pacer's Wire over one end of a socket pair (no HTTP framing)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write_now(self, data: bytes) -> bytes:
        return data[self.sock.send(data):]

    def send_rest(self, raw: bytes) -> None:
        self.sock.sendall(raw)


def test_events_that_fail_mid_stream_raise_where_the_stream_is_served() -> None:
    """A failure in the answer's events (a simulator bug) is raised by ``pace`` in the stream's
    own greenlet, as it was when that greenlet made every event itself; the pacer carries on.
    (The ticker makes a stream's writes a batch at a time: this one fails in the second.)"""
    def events() -> Any:
        yield b"head ", 0
        for _ in range(BATCH + 1):
            yield b"a ", 1
        raise ZeroDivisionError("a simulator bug")

    pacer = Pacer()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        def serve(stream: Stream) -> list[bytes]:
            sent = []
            for burst in pacer.pace(stream, SocketWire(ours)):
                ours.sendall(burst.data)
                sent.append(burst.data)
            return sent

        broken = gevent.spawn(serve, Stream(events(), 0.001))
        whole = gevent.spawn(serve, Stream([(b"x", 0), (b"y", 1), (b"z", 1)], 0.01))
        with pytest.raises(ZeroDivisionError, match="a simulator bug"):
            broken.get(timeout=10)
        assert whole.get(timeout=10) == [b"x", b"z"]  # y went by the pacer
        gevent.sleep(0.05)
        received = theirs.recv(65536)
    assert received.startswith(b"head ") and b"a " in received  # the pacer wrote some first
    assert b"x" in received and b"y" in received
