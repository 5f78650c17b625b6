"""The simulator's request-header parser (greenagents.testing.request_headers): the same message
as pywsgi's own, for plain header blocks and odd ones alike, and requests served over real HTTP
whichever path parsed them."""

from __future__ import annotations

import io
import json
import random
import socket
from typing import Any

import pytest
from gevent.pywsgi import headers_factory

from greenagents.testing.request_headers import MAX_HEADERS, parse

BLOCKS = [
    b"Host: a\r\nContent-Length: 5\r\n\r\nhello",
    b"Host:a\r\nX:  b  \r\n\r\n",  # no space after the colon; trailing spaces kept
    b"Host: a\nX: b\n\n",  # bare LF line ends
    b"Host: a\r\n folded\r\nX: y\r\n\r\n",  # a continuation line
    b"Host: a\r\nnot a header\r\nX: y\r\n\r\n",  # the email parser's body starts here
    b"From me\r\nHost: a\r\n\r\n",
    b"Host: a\rb\r\n\r\n",  # a stray CR splits a line for the email parser
    b":empty\r\n\r\n",
    b"Host: a\r\n",  # EOF before the blank line
    b"",
    b"A: \xe9\xff\r\nB: \x85c\x0cd\r\n\r\n",  # latin-1, and characters str.splitlines splits on
    b"A: 1\r\nA: 2\r\n\r\n",
    b"Bad Name: 1\r\n\r\n",
    b"X: " + b"a" * 70_000 + b"\r\n\r\n",  # too long: pywsgi's "Line too long"
]


def _seen(message: Any, fp: io.BytesIO) -> tuple[Any, ...]:
    return message.status, message.items(), list(message.headers), fp.tell()


def _random_blocks(count: int) -> list[bytes]:
    rng = random.Random(0)
    alphabet = b"ab: \t\r\n\x85\x0c\xe9-_"
    return [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) + b"\r\n\r\n"
            for _ in range(count)]


@pytest.mark.parametrize("block", BLOCKS)
def test_the_same_message_as_pywsgis_parser(block: bytes) -> None:
    ours, theirs = io.BytesIO(block), io.BytesIO(block)
    assert _seen(parse(ours), ours) == _seen(headers_factory(theirs), theirs)


def test_the_same_message_for_random_blocks() -> None:
    for block in _random_blocks(1000):
        ours, theirs = io.BytesIO(block), io.BytesIO(block)
        assert _seen(parse(ours), ours) == _seen(headers_factory(theirs), theirs), block


def test_too_many_headers_is_refused_as_by_pywsgi() -> None:
    block = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    with pytest.raises(Exception, match="more than") as ours:
        parse(io.BytesIO(block))
    with pytest.raises(Exception, match="more than") as theirs:
        headers_factory(io.BytesIO(block))
    assert type(ours.value) is type(theirs.value)


@pytest.mark.parametrize("fault", ["X-Sim-Fault: quota\r\n", "X-Sim-Fault:\r\n quota\r\n"])
def test_steering_headers_reach_the_simulator_plain_or_folded(sim_factory: Any, fault: str) -> None:
    sim = sim_factory()
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\n{fault}"
                      f"Authorization: Bearer sk-test\r\nConnection: close\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    assert raw.startswith(b"HTTP/1.1 429 ") and b"insufficient_quota" in raw
