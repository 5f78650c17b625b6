"""Answers built to hurt (bombs, huge and endless bodies, dripped bytes) against the real transport.

The server is ``tests/hostile_server.py`` on raw sockets in its own process; memory is measured
in a fresh client process, so the figure is the client's alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import greenagents as ga
from greenagents import http, limits
from greenagents.errors import ResponseTooLarge, Timeout
from greenagents.testing import Simulator

from .conftest import run_python

HOSTILE = os.path.join(os.path.dirname(__file__), "hostile_server.py")


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    """The base URL of a hostile server process (``http://127.0.0.1:PORT``)."""
    process = subprocess.Popen([sys.executable, HOSTILE], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


def _encodings() -> list[str]:
    """gzip and deflate, and zstd when this urllib3 can decode it (brotli is not installed)."""
    import urllib3.response

    return ["gzip", "deflate"] + (["zstd"] if getattr(urllib3.response, "HAS_ZSTD", False) else [])


@pytest.mark.usefixtures("http_transport")
@pytest.mark.parametrize("encoding", _encodings())
def test_compression_bomb_stops_at_the_cap(hostile: str, encoding: str) -> None:
    ga.configure(max_response_bytes=1 << 20)
    with pytest.raises(ResponseTooLarge, match="max_response_bytes=1,048,576") as info:
        http.post_json(f"{hostile}/{encoding}-bomb", {}, {}, provider="openai")
    assert not info.value.retryable


@pytest.mark.usefixtures("http_transport")
@pytest.mark.parametrize("path", ["big", "endless"])
def test_huge_and_endless_bodies_stop_at_the_cap(hostile: str, path: str) -> None:
    with pytest.raises(ResponseTooLarge, match="GREENAGENTS_MAX_RESPONSE_BYTES"):
        http.post_json(f"{hostile}/{path}", {}, {}, timeout=30)


@pytest.mark.usefixtures("http_transport")
def test_a_too_large_answer_is_one_attempt_not_retried(hostile: str) -> None:
    class Big(ga.Agent):
        base_url = f"{hostile}/big"
        retries = 3

    result = Big.call("hi")
    assert isinstance(result.error, ResponseTooLarge) and result.attempts == 1


def test_the_cap_is_a_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENAGENTS_MAX_RESPONSE_BYTES", "2048")
    assert ga.Client().settings.max_response_bytes == 2048  # a fresh client reads it


@pytest.mark.usefixtures("http_transport")
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmHWM")
def test_four_hostile_answers_at_once_stay_under_200_mb(hostile: str) -> None:
    """Before the cap: +2 GB for four gzip bombs, +480 MB for four 80 MB answers."""
    done = run_python(rf"""
        import greenagents.monkey
        import json, re
        import greenagents as ga

        def grown_mb():  # the peak RSS (ru_maxrss would keep the forking parent's across exec)
            status = open("/proc/self/status").read()
            return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

        class Hostile(ga.Agent):
            retries = 0
            timeout = 60

        kinds = ["gzip-bomb", "deflate-bomb", "big", "endless"]
        agents = [type(k, (Hostile,), {{"base_url": "{hostile}/" + k}}) for k in kinds]
        warm = type("Warm", (Hostile,), {{"base_url": "{hostile}/answer/hi"}})
        assert ga.batch([(warm, {{"input": "x"}})])[0].ok  # imports and pool, outside the figure
        before = grown_mb()
        results = ga.batch([(a, {{"input": "x"}}) for a in agents])
        print(json.dumps({{"grown_mb": round(grown_mb() - before, 1),
                          "errors": [type(r.error).__name__ for r in results]}}))
    """)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["errors"] == ["ResponseTooLarge"] * 4
    assert report["grown_mb"] < 200, report
    print(f"4 hostile answers at once: peak RSS +{report['grown_mb']} MB")  # -s shows it


# -- time: the timeout bounds the whole attempt --------------------------------------------------

@pytest.mark.usefixtures("http_transport")
@pytest.mark.parametrize("path", ["drip", "drip-headers"])
def test_a_dripped_answer_ends_at_the_timeout(hostile: str, path: str) -> None:
    """Before: a byte every 0.2 s never tripped the read timeout (40 s+ with timeout=5)."""
    start = time.monotonic()
    with pytest.raises(Timeout, match=r"within timeout=1s"):
        http.post_json(f"{hostile}/{path}", {}, {}, timeout=1)
    assert time.monotonic() - start < 10  # structure, not timing: "forever" became "about 1 s"


@pytest.mark.usefixtures("http_transport")
@pytest.mark.parametrize("path", ["drip", "drip-headers"])
def test_a_dripped_answer_ends_unpatched_too(hostile: str, path: str) -> None:
    """The thread fallback: a watchdog cuts dripping headers, a deadline check between reads
    ends a dripping body."""
    done = run_python(f"""
        import time
        from greenagents import http
        from greenagents.errors import Timeout
        start = time.monotonic()
        try:
            http.post_json("{hostile}/{path}", {{}}, {{}}, timeout=1)
        except Timeout as exc:
            print("timeout", round(time.monotonic() - start))
    """)
    assert done.returncode == 0, done.stderr
    word, seconds = done.stdout.split()
    assert word == "timeout" and int(seconds) < 10


def test_a_cooldown_longer_than_the_deadline_fails_at_once(sim: Simulator) -> None:
    """Before: the cooldown slept before the deadline was looked at, overrunning it."""

    class Cooled(ga.Agent):
        base_url = sim.base_url
        retries = ga.Retry(max=3, deadline=2)

    limits.cooldown(f"openai@{sim.base_url}", 60)
    start = time.monotonic()
    result = Cooled.call("hi")
    assert isinstance(result.error, Timeout) and "cooling down" in str(result.error)
    assert time.monotonic() - start < 30  # structure: not the 60 s cooldown


# -- invalid time limits and models are refused where they are written ---------------------------

BAD_SECONDS = [0, -1, float("nan"), float("inf"), "5", True]


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_configure_refuses_a_bad_timeout(value: object) -> None:
    with pytest.raises(ga.errors.ConfigError, match="timeout"):
        ga.configure(timeout=value)


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_an_agent_with_a_bad_timeout_is_refused_when_defined(value: object) -> None:
    """Before: timeout = 0 silently became 60 s; nan hung forever."""
    with pytest.raises(ga.errors.ConfigError, match=r"Bad\.timeout = .*seconds > 0"):
        type("Bad", (ga.Agent,), {"timeout": value})


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_a_bad_retry_deadline_is_refused(value: object) -> None:
    with pytest.raises(ga.errors.ConfigError, match=r"Retry\.deadline = "):
        ga.Retry(deadline=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "  ", 123])
def test_an_agent_with_a_bad_model_is_refused_when_defined(value: object) -> None:
    """Before: "" ran the default model and 123 raised AttributeError at call time."""
    with pytest.raises(ga.errors.ConfigError, match=r"Bad\.model = .*name a model"):
        type("Bad", (ga.Agent,), {"model": value})


def test_the_environment_still_speaks_in_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENAGENTS_TIMEOUT", "2.5")
    assert ga.Client().settings.timeout == 2.5
    monkeypatch.setenv("GREENAGENTS_TIMEOUT", "nan")
    with pytest.raises(ga.errors.ConfigError, match="timeout"):
        ga.Client().configure()  # reads the environment


def test_configure_refuses_a_tracking_url_that_is_not_sqlite() -> None:
    """Before: accepted, then every call's log write failed after a successful call."""
    with pytest.raises(ga.errors.ConfigError, match="only SQLite"):
        ga.configure(tracking="mysql://user@db/runs")
