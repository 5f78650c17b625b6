"""Integrations, for real: gunicorn workers serving the example app, unmodified SDK code, threads.

Everything talks HTTP over 127.0.0.1 to one simulator in a child process (1 s latency, so
concurrency shows as wall time far below the sum of the calls). gunicorn runs as a real
subprocess on a free port; unpatched scenarios run in fresh interpreters. Timing assertions are
structural: "well under one by one", never tight.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

import greenagents as ga
from greenagents.testing import Simulator
from greenagents.testing.simulator import SimulatorProcess

from .agents import SentimentAgent, SummaryAgent, at
from .conftest import run_python

LATENCY_S = 1.0
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gunicorn_app"
WIDE = 200  # concurrent calls of unmodified user code


@pytest.fixture(scope="module")
def remote_sim() -> Iterator[SimulatorProcess]:
    """One simulator in a child process for the whole module: its CPU is not the client's."""
    with Simulator(latency=LATENCY_S).start_process() as sim:
        yield sim


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def gunicorn(sim: SimulatorProcess, *args: str, tmp: Path) -> Iterator[tuple[str, Path]]:
    """A real gunicorn on a free port, the example app asking ``sim``; yields (url, stderr file).

    Waits until a worker answers; always stops the server (SIGINT: quick shutdown, then kill).
    """
    port = _free_port()
    stderr = tmp / f"gunicorn-{port}.err"
    env = {**os.environ, "OPENAI_BASE_URL": sim.base_url}
    command = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1", *args]
    with stderr.open("w") as err:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=err, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        _await_http(url, server, stderr)
        yield url, stderr
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _await_http(url: str, server: subprocess.Popen[bytes], stderr: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"gunicorn exited ({server.returncode}):\n{stderr.read_text()}")
        try:
            requests.get(url + "/", timeout=2)  # a 404 from Flask: a worker is serving
            return
        except requests.RequestException:  # not listening yet, or a worker still booting
            time.sleep(0.2)
    raise AssertionError(f"gunicorn did not answer within 30 s:\n{stderr.read_text()}")


def _analyze(url: str) -> tuple[dict[str, Any], float]:
    """One /analyze request: its JSON body and the client's wall time."""
    start = time.monotonic()
    response = requests.get(f"{url}/analyze", params={"text": "Arrived late, works great."},
                            timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, time.monotonic() - start


# --- gunicorn, gevent workers --------------------------------------------------------------


@pytest.fixture(scope="module")
def gevent_server(remote_sim: SimulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The example as documented: gevent worker, patched by gunicorn.conf.py, app preloaded.

    ``--preload`` is the hard case (the app is imported in the master, before the worker's own
    patching); the config file's first line makes it safe.
    """
    conf = str(EXAMPLE / "gunicorn.conf.py")
    with gunicorn(remote_sim, "-c", conf, "--preload", tmp=tmp_path_factory.mktemp("gevent")) as up:
        yield up


def test_gevent_worker_serves_500_concurrent_agent_requests(
        gevent_server: tuple[str, Path]) -> None:
    url, _ = gevent_server

    def sentiment(i: int) -> dict[str, Any]:
        response = requests.get(f"{url}/sentiment", params={"text": f"review {i}"}, timeout=60)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    start = time.monotonic()
    results = ga.each(range(500), sentiment, max_concurrent=500)
    elapsed = time.monotonic() - start
    assert [r.error for r in results if not r.ok] == []
    assert {r.value["label"] for r in results} <= {"positive", "negative", "neutral"}  # type: ignore[index]
    assert elapsed < 60, elapsed  # one by one: 500 s
    print(f"gunicorn, 1 gevent worker: 500 requests of {LATENCY_S}s in {elapsed:.1f}s")


def test_a_requests_batch_of_five_agents_takes_one_latency(gevent_server: tuple[str, Path]) -> None:
    body, elapsed = _analyze(gevent_server[0])
    assert body["errors"] == {}
    assert set(body["analyses"]) == {"sentiment", "summary", "category", "keywords", "language"}
    assert body["seconds"] < 3.5 and elapsed < 3.5, (body["seconds"], elapsed)  # in turn: 5 s


def test_patching_in_the_config_file_leaves_no_patch_warnings(
        gevent_server: tuple[str, Path]) -> None:
    _analyze(gevent_server[0])  # the first HTTP calls of the worker have happened
    log = gevent_server[1].read_text()
    for problem in ("MonkeyPatchWarning", "LatePatchWarning", "NotPatchedWarning", "Traceback"):
        assert problem not in log, log


TLS_SERVER = """
import http.server, ssl, sys
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

HTTPS_APP = """
import requests  # at import time: with --preload, before the gevent worker patches

def app(environ, start_response):
    status = requests.get({url!r}, verify={cert!r}, timeout=10).status_code
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(status).encode()]
"""


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTPS server with a self-signed certificate: (url, certificate file)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                           "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr!r:.200}")
    server = subprocess.Popen([sys.executable, "-c", TLS_SERVER, str(cert), str(key)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield f"https://127.0.0.1:{server.stdout.readline().strip()}/", cert
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("patched_by_config", [False, True])
def test_preload_needs_the_patch_in_the_config_file(
        patched_by_config: bool, tls_url: tuple[str, Path], remote_sim: SimulatorProcess,
        tmp_path: Path) -> None:
    """``--preload`` without it: HTTPS fails with RecursionError; with it: HTTPS works."""
    url, cert = tls_url
    (tmp_path / "https_app.py").write_text(HTTPS_APP.format(url=url, cert=str(cert)))
    config = ["-c", str(EXAMPLE / "gunicorn.conf.py")] if patched_by_config else []
    args = (*config, "-k", "gevent", "--preload", "--chdir", str(tmp_path), "https_app:app")
    with gunicorn(remote_sim, *args, tmp=tmp_path) as (server, stderr):
        response = requests.get(server + "/", timeout=30)
    log = stderr.read_text()
    if patched_by_config:
        assert response.text == "200" and "MonkeyPatchWarning" not in log, log
    else:
        assert response.status_code == 500 and "RecursionError" in log, log
        assert "MonkeyPatchWarning" in log, log


@pytest.mark.parametrize(("before", "warned"), [
    ("import ssl", False),  # what gunicorn does before reading gunicorn.conf.py: harmless
    ("from ssl import SSLContext", True),  # a module holding the stdlib class: HTTPS would recurse
])
def test_late_patch_warning_is_about_what_breaks(before: str, warned: bool) -> None:
    out = run_python(f"""
        import warnings
        warnings.simplefilter("always")
        {before}
        import greenagents.monkey
    """)
    assert out.returncode == 0, out.stderr
    assert ("LatePatchWarning" in out.stderr) is warned, out.stderr


# --- gunicorn, thread workers (nothing patched) ---------------------------------------------


def test_thread_worker_falls_back_to_threads_and_stays_concurrent(
        remote_sim: SimulatorProcess, tmp_path: Path) -> None:
    args = ("-k", "gthread", "--threads", "4", "--chdir", str(EXAMPLE), "app:app")
    with gunicorn(remote_sim, *args, tmp=tmp_path) as (url, stderr):
        body, elapsed = _analyze(url)
        sentiment = requests.get(f"{url}/sentiment", params={"text": "fine"}, timeout=30)
    assert body["errors"] == {} and len(body["analyses"]) == 5
    assert body["seconds"] < 3.5 and elapsed < 3.5, (body["seconds"], elapsed)
    assert sentiment.status_code == 200, sentiment.text
    log = stderr.read_text()
    assert "NotPatchedWarning" in log and "MonkeyPatchWarning" not in log, log


# --- unmodified user code through ga.each ----------------------------------------------------


def _user_functions(sim: SimulatorProcess) -> dict[str, Callable[[int], object]]:
    """What users already wrote: clients built once (here, after patching), plain functions."""
    openai_client = openai.OpenAI(base_url=sim.base_url, api_key="test")
    anthropic_client = anthropic.Anthropic(base_url=sim.anthropic_url, api_key="test")
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=WIDE))  # the one-line fix for a shared Session
    pool = urllib3.PoolManager(maxsize=WIDE)
    chat = f"{sim.base_url}/chat/completions"

    def payload(i: int) -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"call {i}"}]}

    def with_openai(i: int) -> object:
        return openai_client.chat.completions.create(**payload(i)).choices[0].message.content

    def with_anthropic(i: int) -> object:
        return anthropic_client.messages.create(max_tokens=64, **payload(i)).content[0]

    def with_requests(i: int) -> object:
        return requests.post(chat, json=payload(i), timeout=30).raise_for_status()

    def with_a_session(i: int) -> object:
        return session.post(chat, json=payload(i), timeout=30).raise_for_status()

    def with_urllib3(i: int) -> object:
        response = pool.request("POST", chat, json=payload(i), timeout=30)
        assert response.status == 200, response.data
        return response.json()

    return {fn.__name__: fn for fn in
            (with_openai, with_anthropic, with_requests, with_a_session, with_urllib3)}


@pytest.fixture(scope="module")
def user_functions(remote_sim: SimulatorProcess) -> dict[str, Callable[[int], object]]:
    return _user_functions(remote_sim)


@pytest.mark.parametrize("name", ["with_openai", "with_anthropic", "with_requests",
                                  "with_a_session", "with_urllib3"])
def test_unmodified_code_runs_200_at_once(name: str, user_functions: dict[str, Any],
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = ga.each(range(WIDE), user_functions[name], max_concurrent=WIDE)
    elapsed = time.monotonic() - start
    assert [repr(r.error) for r in results if not r.ok] == []
    assert elapsed < 20, elapsed  # one by one: 200 s
    assert "Connection pool is full" not in caplog.text
    assert [str(w.message) for w in caught] == []


def test_a_default_session_shared_wide_discards_connections(
        remote_sim: SimulatorProcess, caplog: pytest.LogCaptureFixture) -> None:
    """The pitfall the README documents: a default Session keeps 10 connections per host."""
    session = requests.Session()
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    results = ga.each(range(50), lambda i: session.get(f"{remote_sim.base_url}/models", timeout=30),
                      max_concurrent=50)
    assert all(r.ok for r in results)  # correct, only wasteful: reconnects instead of keep-alive
    assert "Connection pool is full" in caplog.text


def test_spawn_runs_agents_in_parallel(remote_sim: SimulatorProcess) -> None:
    """The seed's "parallel agent calls": spawn each, then ``.get()`` each."""
    sentiment_agent = at(SentimentAgent, remote_sim.base_url)
    summary_agent = at(SummaryAgent, remote_sim.anthropic_url)
    start = time.monotonic()
    sentiment_task = ga.spawn(sentiment_agent.call, text="I love this!")
    summary_task = ga.spawn(summary_agent.call, text="A long review of a short trip.")
    second_opinion_task = ga.spawn(sentiment_agent.call, text="Not sure about it.")
    results = [task.get() for task in (sentiment_task, summary_task, second_opinion_task)]
    elapsed = time.monotonic() - start
    assert [r.error for r in results if not r.ok] == []
    assert elapsed < 2.5, elapsed  # one after another: 3 s


# --- real threads, unpatched ----------------------------------------------------------------


def test_agent_calls_from_20_real_threads_share_sessions_and_tracking(
        remote_sim: SimulatorProcess, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    out = run_python(f"""
        import json, sqlite3, sys, threading, time
        sys.path.insert(0, {str(ROOT)!r})
        import greenagents as ga
        from tests.agents import SentimentAgent, at

        ga.configure(tracking="sqlite:///{db}")
        agent = at(SentimentAgent, {remote_sim.base_url!r})
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(agent.call(text=f"t{{i}}")))
                   for i in range(20)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
        ga.tracking.flush()
        rows = sqlite3.connect({str(db)!r}).execute("select count(*) from calls").fetchone()[0]
        print(json.dumps({{"patched": ga.is_patched(), "ok": sum(r.ok for r in results),
                           "errors": [repr(r.error) for r in results if not r.ok],
                           "elapsed": elapsed, "rows": rows}}))
    """)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["patched"] is False and report["errors"] == [] and report["ok"] == 20
    assert report["rows"] == 20
    assert report["elapsed"] < 10, report  # one by one: 20 s
