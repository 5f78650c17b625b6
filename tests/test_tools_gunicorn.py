"""A tool-using agent behind a real ``gunicorn -k gevent`` (the example app's ``/trip``), one worker.

Each request runs an agent whose two tools are plain ``requests`` calls to a tool server in its
own process, answering after 2 s. The tool server counts the tool requests in flight: with every
request's tools waiting together, the peak passes the number of requests. Bounds are structural:
one by one, 200 requests of two 2-s tools take 800 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import greenagents as ga
from greenagents.testing import Simulator, ToolServer
from greenagents.testing.toolserver import ToolServerProcess

from .test_integration_stack import EXAMPLE, gunicorn

TOOL_S = 2.0
CLIENTS = 200


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServerProcess]:
    with ToolServer(latency=TOOL_S).start_process() as server:
        yield server


@pytest.fixture(scope="module")
def server(tool_server: ToolServerProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    conf = str(EXAMPLE / "gunicorn.conf.py")
    with Simulator(latency=0.2).start_process() as sim, pytest.MonkeyPatch.context() as env:
        env.setenv("TOOLS_URL", tool_server.url)
        with gunicorn(sim, "-c", conf, "--preload", tmp=tmp_path_factory.mktemp("tools")) as up:
            yield up[0]


def _trip(url: str, i: int) -> dict[str, Any]:
    response = requests.get(f"{url}/trip", params={"city": f"town {i}"}, timeout=120)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_one_turn_calls_its_tools_at_once(server: str, tool_server: ToolServerProcess) -> None:
    tool_server.reset()
    body = _trip(server, 0)
    assert (body["turns"], body["tool_calls"], body["tool_errors"]) == (2, 2, 0)
    assert "sunny" in body["plan"] and "/hotels" in body["plan"]  # both tools' outputs came back
    assert tool_server.stats() == {"requests": 2, "in_flight": 0, "peak": 2}


def test_many_clients_tools_wait_together(server: str, tool_server: ToolServerProcess) -> None:
    tool_server.reset()
    started = time.monotonic()
    results = ga.each(range(CLIENTS), lambda i: _trip(server, i), max_concurrent=CLIENTS)
    wall = time.monotonic() - started
    assert [r.error for r in results if not r.ok] == []
    stats = tool_server.stats()
    assert stats["requests"] == 2 * CLIENTS
    # more tool requests in flight than clients: requests overlapped, and so did one turn's two
    assert stats["peak"] > CLIENTS, stats
    assert wall < 60, wall  # one by one: 200 x 2 x 2 s = 800 s
    print(f"\ngunicorn, 1 gevent worker: {CLIENTS} /trip requests (2 tools of {TOOL_S} s each) "
          f"in {wall:.1f} s, tool peak {stats['peak']}")
