"""The example's Server-Sent Events endpoint under a real ``gunicorn -k gevent``, one worker.

500 clients at once stream a 2 s, 50-word answer (first token after 0.5 s, then one word per
30 ms) from one simulator process. Clients are raw sockets in greenlets, so the test measures the
server, not an HTTP client library. Bounds are structural: one by one, 500 streams take 1,000 s.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Iterator

import gevent
import pytest

import greenagents as ga
from greenagents.testing import Simulator
from greenagents.testing.simulator import SimulatorProcess

from .test_integration_stack import EXAMPLE, gunicorn

FIRST_TOKEN_S, WORDS, WORD_S = 0.5, 50, 0.03  # the simulator's answer: 0.5 + 50 x 0.03 = 2 s
CLIENTS = 500

pytestmark = pytest.mark.usefixtures("http_transport")  # the worker over urllib3 and geventhttpclient


@pytest.fixture(scope="module")
def streaming_sim() -> Iterator[SimulatorProcess]:
    with Simulator(latency=FIRST_TOKEN_S, token_latency=WORD_S,
                   answer_words=WORDS).start_process() as sim:
        yield sim


@pytest.fixture(scope="module")
def server(streaming_sim: SimulatorProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    conf = str(EXAMPLE / "gunicorn.conf.py")
    with gunicorn(streaming_sim, "-c", conf, tmp=tmp_path_factory.mktemp("sse")) as (url, _):
        _read(url, -1)  # the worker's first stream imports urllib3 and builds the pool
        yield url


def _connect(url: str, text: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(f"GET /stream?text={text} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                 "\r\n".encode())
    return sock


def _read(url: str, i: int) -> tuple[float, float, bytes]:
    """One client: seconds to the first delta, to the end, and the whole response."""
    start = time.monotonic()
    first = None
    received = b""
    with _connect(url, f"review-{i}") as sock:
        while chunk := sock.recv(65536):
            received += chunk
            if first is None and b"\ndata: " in received:
                first = time.monotonic() - start
    return first or float("inf"), time.monotonic() - start, received


def test_500_clients_stream_at_once_from_one_worker(server: str) -> None:
    started = time.monotonic()
    results = ga.each(range(CLIENTS), lambda i: _read(server, i), max_concurrent=CLIENTS)
    wall = time.monotonic() - started
    assert [r.error for r in results if not r.ok] == []
    firsts = sorted(r.value[0] for r in results)  # type: ignore[index]
    ends = sorted(r.value[1] for r in results)  # type: ignore[index]
    for result in results:
        body = result.value[2]  # type: ignore[index]
        assert body.startswith(b"HTTP/1.1 200") and b"text/event-stream" in body
        assert body.count(b"\ndata: ") == WORDS + 1 and b"event: done" in body
    print(f"\n{CLIENTS} SSE clients, 1 gevent worker: first word p50 {statistics.median(firsts):.2f}"
          f" s, max {firsts[-1]:.2f} s (the simulator's first token: {FIRST_TOKEN_S} s); "
          f"complete p50 {statistics.median(ends):.2f} s, max {ends[-1]:.2f} s (answer: 2 s); "
          f"wall {wall:.1f} s")
    # Structural bounds only (one by one, 500 streams take 1,000 s): this machine's load decides
    # the rest. Idle, the first word comes ~0.8 s after the simulator's first token (the burst of
    # 500 requests at once) and streams end at ~2.7 s; at a load average of 6 on 2 cores, ~5 s.
    # That words are sent on as generated, not held back, is the next test's proof.
    assert firsts[-1] < 20 and statistics.median(ends) < 20 and wall < 30


def test_a_client_that_hangs_up_cancels_its_model_call(server: str,
                                                       streaming_sim: SimulatorProcess) -> None:
    streaming_sim.reset()
    with _connect(server, "leaving") as sock:
        received = b""
        while b"\ndata: " not in received:
            received += sock.recv(65536)
        assert streaming_sim.stats()["in_flight"] == 1  # the first word came before the last
    for _ in range(100):  # gunicorn notices at its next write, the simulator at the one after
        stats = streaming_sim.stats()
        if stats["by_status"].get("disconnected"):
            break
        gevent.sleep(0.05)
    assert stats["by_status"] == {"disconnected": 1}
    assert stats["in_flight"] == 0
