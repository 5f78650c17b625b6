"""Reading a streamed answer, over urllib3 and geventhttpclient: each wait for data is bounded (not
the whole stream, not the caller's loop), a stall says so, TLS streams too."""

from __future__ import annotations

import json
from typing import Any

import gevent
import pytest

import greenagents as ga
from greenagents import errors

from .agents import SummaryAgent, at
from .test_http import LocalServer, server, tls_server  # noqa: F401  # the fixtures

pytestmark = pytest.mark.usefixtures("http_transport")  # every test over urllib3 and geventhttpclient

WORDS = ["One ", "two ", "three ", "four ", "five ", "six."]


def _events(words: list[str], *, done: bool = True) -> bytes:
    """An OpenAI stream of ``words`` (its ``[DONE]`` left out when not ``done``)."""
    chunks = [{"model": "m", "choices": [{"delta": {"content": word}, "finish_reason": None}]}
              for word in words]
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks).encode()
    return body + b"data: [DONE]\n\n" if done else body


def _agent(url: str, **attributes: Any) -> type[ga.Agent]:
    return at(SummaryAgent, url, model="openai/m", retries=0, **attributes)


def test_a_stalled_stream_raises_a_timeout_that_says_so(server: LocalServer) -> None:  # noqa: F811
    """The server sends two deltas, then nothing for 1.5 s: the read after them waits timeout=0.3s,
    and the error names the stall (it once said "no connection" over geventhttpclient and "did not
    answer in full" over urllib3); the connection is closed, not reused."""
    server.reply = (200, {}, _events(WORDS[:2], done=False))
    stream = _agent(server.url + "/sse/stall/v1", timeout=0.3).stream(text="x")
    seen = []
    with pytest.raises(errors.Timeout, match=r"the stream stalled \(no data for timeout=0\.3s\)"):
        for delta in stream:
            seen.append(delta)
    assert seen == WORDS[:2] and isinstance(stream.result.error, errors.Timeout)
    server.reply = (200, {}, _events(WORDS))
    assert _agent(server.url + "/sse/v1").stream(text="x").result.value == "".join(WORDS)
    assert server.connections == 2


def test_timeout_bounds_each_wait_not_the_whole_stream(server: LocalServer) -> None:  # noqa: F811
    """Six events 0.1 s apart (0.6 s in all) with timeout=0.3s: no wait is longer than 0.3 s."""
    server.reply = (200, {}, _events(WORDS))
    stream = _agent(server.url + "/sse/paced/v1", timeout=0.3).stream(text="x")
    assert list(stream) == WORDS and stream.result.value == "".join(WORDS)


def test_a_slow_loop_is_never_timed_out_between_reads(server: LocalServer) -> None:  # noqa: F811
    """The caller's loop takes 0.4 s per delta, longer than timeout=0.3s: only the waits for data
    are bounded, never the caller's own time between them."""
    server.reply = (200, {}, _events(WORDS[:4]))
    stream = _agent(server.url + "/sse/paced/v1", timeout=0.3).stream(text="x")
    seen = []
    for delta in stream:
        seen.append(delta)
        gevent.sleep(0.4)
    assert seen == WORDS[:4] and stream.result.ok


def test_a_stream_over_tls_is_read_and_bounded(tls_server: tuple[LocalServer, str],  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    srv, ca = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    srv.reply = (200, {}, _events(WORDS))
    assert list(_agent(srv.url + "/sse/paced/v1", timeout=0.3).stream(text="x")) == WORDS
    srv.reply = (200, {}, _events(WORDS[:2], done=False))
    stream = _agent(srv.url + "/sse/stall/v1", timeout=0.3).stream(text="x")
    with pytest.raises(errors.Timeout, match="the stream stalled"):
        list(stream)
    assert stream.text == "".join(WORDS[:2])
