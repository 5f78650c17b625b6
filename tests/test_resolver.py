"""DNS after patching: IP literals are answered in place, names still go through gevent's pool."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.monkey
import pytest
import requests

from greenagents.resolver import Resolver
from greenagents.testing import ToolServer

from .conftest import run_python

_native_getaddrinfo = gevent.monkey.get_original("socket", "getaddrinfo")


class _RecordingPool:
    """The hub's native thread pool, recording what the resolver sends it."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.trips = pool, list[Any]()

    def apply(self, func: Any, args: Any = None, kwds: Any = None) -> Any:
        self.trips.append(func)
        return self.pool.apply(func, args, kwds)


@pytest.fixture
def pool_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The lookups this thread's resolver sends to the native thread pool, as they go."""
    resolver: Any = gevent.get_hub().resolver  # ours, with gevent's thread resolver's pool
    recording = _RecordingPool(resolver.pool)
    monkeypatch.setattr(resolver, "pool", recording)
    yield recording.trips


def test_patch_installs_the_resolver() -> None:
    assert isinstance(gevent.get_hub().resolver, Resolver)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.1.2.3", b"127.0.0.1", None])
def test_an_ip_literal_needs_no_thread(pool_trips: list[Any], host: Any) -> None:
    answer = socket.getaddrinfo(host, 8000, 0, socket.SOCK_STREAM)
    assert pool_trips == []
    assert answer == _native_getaddrinfo(host, 8000, 0, socket.SOCK_STREAM)


def test_a_name_or_a_service_name_still_goes_to_the_pool(pool_trips: list[Any]) -> None:
    assert socket.getaddrinfo("localhost", 80, socket.AF_INET) == \
        _native_getaddrinfo("localhost", 80, socket.AF_INET)
    assert socket.getaddrinfo("127.0.0.1", "http", socket.AF_INET, socket.SOCK_STREAM) == \
        _native_getaddrinfo("127.0.0.1", "http", socket.AF_INET, socket.SOCK_STREAM)
    assert len(pool_trips) == 2


def test_errors_are_the_c_librarys() -> None:
    with pytest.raises(socket.gaierror) as green:
        socket.getaddrinfo("127.0.0.1", 80, socket.AF_INET6)
    with pytest.raises(socket.gaierror) as native:
        _native_getaddrinfo("127.0.0.1", 80, socket.AF_INET6)
    assert green.value.errno == native.value.errno


def test_requests_to_an_ip_literal_opens_connections_without_the_pool(
        pool_trips: list[Any]) -> None:
    with ToolServer() as tools, requests.Session() as session:
        session.trust_env = False
        greenlets = [gevent.spawn(lambda: session.get(f"{tools.url}/weather/Oslo").text)
                     for _ in range(10)]  # 10 at once: 10 new connections (the pool keeps 10)
        gevent.joinall(greenlets, raise_error=True)
    assert [g.value for g in greenlets] == ["Oslo: 21 °C, sunny"] * 10
    assert pool_trips == []


def test_a_resolver_the_program_chose_is_kept() -> None:
    out = run_python("""
        import os
        os.environ["GEVENT_RESOLVER"] = "block"
        import greenagents.monkey, gevent
        print(type(gevent.get_hub().resolver).__module__)
    """)
    assert out.stdout.strip() == "gevent.resolver.blocking", out.stderr
