"""Fan-out at scale: thousands of calls at once reach the server as soon as each is ready.

Structure, not timing (the times live in bench/fanout.py): a call's connection goes out while
later calls are still being built (an IP address needs no trip through gevent's thread pool,
:mod:`greenagents.resolver`; a name is looked up once for a burst of connections), the
simulator drains its listen queue, and its timeline (``GET /_sim/timeline``) shows all that.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

import greenagents as ga
from greenagents import http
from greenagents.testing import Simulator


@pytest.fixture
def gevent_transport(monkeypatch: pytest.MonkeyPatch, ga_client: ga.Client) -> None:
    pytest.importorskip("geventhttpclient")
    monkeypatch.setenv("GREENAGENTS_HTTP_TRANSPORT", "geventhttpclient")
    ga_client.reset()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(latency=0.0) as running:
        yield running


class _CountingResolver:
    """Stands in for the hub's resolver: counts lookups, answers them as the system does."""

    def __init__(self, real: Any) -> None:
        self.real, self.hosts = real, []

    def getaddrinfo(self, host: str, *args: Any, **kwargs: Any) -> Any:
        self.hosts.append(host)
        return self.real.getaddrinfo(host, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> _CountingResolver:
    hub = gevent.get_hub()
    counting = _CountingResolver(hub.resolver)
    monkeypatch.setattr(hub, "resolver", counting)
    return counting


@pytest.mark.usefixtures("gevent_transport")
def test_a_name_is_looked_up_once_for_many_connections(sim: Simulator,
                                                       resolver: _CountingResolver) -> None:
    url = f"{sim.url.replace('127.0.0.1', 'localhost')}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    calls = [gevent.spawn(http.post_json, url, body, {}) for _ in range(50)]
    gevent.joinall(calls, raise_error=True)
    assert [call.value.status for call in calls] == [200] * 50
    assert resolver.hosts == ["localhost"]


_PIPELINED = """
    import os
    os.environ["GREENAGENTS_HTTP_TRANSPORT"] = "geventhttpclient"
    import greenagents.monkey
    import json, resource, sys, time
    from greenagents import http
    import greenagents as ga

    url, n = sys.argv[1], int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = []

    def call(i):
        started.append(time.monotonic())
        end = time.monotonic() + 0.0005  # a request that takes a while to build, as an agent's
        while time.monotonic() < end:
            pass
        return http.post_json(url + "/v1/chat/completions", {"model": "gpt-4o-mini",
                              "messages": [{"role": "user", "content": f"call {i}"}]}, {})

    begin = time.monotonic()
    results = list(ga.each(range(n), call, max_concurrent=n))
    print(json.dumps({"ok": sum(r.ok for r in results), "last_started": max(started),
                      "wall": time.monotonic() - begin}))
"""


def test_thousands_of_calls_at_once_reach_the_server_while_others_are_built() -> None:
    """2,000 calls of 1 s, all at once: the first request reaches the server before the last
    call has even started building its request (it used to wait until every call had built
    its request: the server sat idle, then got 2,000 connections in one burst), and the batch
    ends in a small multiple of one latency, not of 2,000."""
    pytest.importorskip("geventhttpclient")
    n = 2000
    with Simulator(latency=1.0).start_process() as server:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_PIPELINED), server.url, str(n)],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        timeline = _timeline(server.url)
    assert report["ok"] == n
    assert len(timeline["arrived"]) == len(timeline["answered"]) == n
    assert min(timeline["arrived"]) < report["last_started"]
    assert report["wall"] < 60  # 2,000 calls one after another would take 2,000 s


def _timeline(root: str) -> dict[str, list[float]]:
    with urllib.request.urlopen(f"{root}/_sim/timeline", timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    assert answer.pop("cpu_s") >= 0
    return answer


def test_the_simulator_keeps_a_timeline(sim: Simulator) -> None:
    """Accepted connections, requests read and answers sent, on the machine's monotonic clock
    (a benchmark in another process places them on its own time line); a reset empties it."""
    before = time.monotonic()
    for i in range(3):
        assert http.post_json(f"{sim.url}/v1/chat/completions", {
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{i}"}]}, {}).status == 200
    timeline = _timeline(sim.url)
    assert len(timeline["arrived"]) == len(timeline["answered"]) == 3
    assert 1 <= len(timeline["accepted"]) <= 4  # kept-alive connections; the timeline call's own
    assert all(before <= moment <= time.monotonic() for moments in timeline.values()
               for moment in moments)
    assert timeline["arrived"] <= timeline["answered"]
    sim.reset()
    assert sim.stats()["requests"] == 0
    assert _timeline(sim.url)["arrived"] == []


def test_the_simulator_accepts_a_burst_of_connections(sim: Simulator) -> None:
    """Connections that send nothing yet are accepted all the same (and marked on the timeline):
    the server drains its listen queue instead of leaving clients to SYN retransmits."""
    from greenagents.testing.server import BACKLOG, SimServer

    assert SimServer.max_accept == BACKLOG
    host, port = sim.url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port)), timeout=10) for _ in range(200)]
    try:
        deadline, polls, accepted = time.monotonic() + 30, 0, 0
        while accepted < 200 and time.monotonic() < deadline:
            gevent.sleep(0.05)
            polls += 1  # each look is a connection of its own
            accepted = len(_timeline(sim.url)["accepted"]) - polls
        assert accepted == 200
    finally:
        for sock in sockets:
            sock.close()
