"""The dashboard over real logs, through real HTTP on 127.0.0.1: numbers, filters, exports,
escaping, redaction, the token, read-only access, live refresh, and a million-call log."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import greenagents as ga
from greenagents import tracking
from greenagents.dashboard import Dashboard, serve
from greenagents.testing import Simulator
from greenagents.testing.execution_log import write_log

from .dashboard_logs import SECRET, XSS, calls, real_log, served

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def log(tmp_path: Path, sim_factory: Any) -> Path:
    sim: Simulator = sim_factory(faults={"server_error": 0.3}, seed=7)
    db = tmp_path / "runs.db"
    real_log(db, sim.base_url)
    return db


@pytest.fixture
def url(log: Path) -> Iterator[str]:
    with served(log) as base:
        yield base


def run_id(db: Path) -> str:
    return str(calls(db, "1 LIMIT 1")[0]["run_id"])


def ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<td><a href="/calls/(\d+)">', html)]


def test_overview_numbers_match_the_log(log: Path, url: str) -> None:
    rows = calls(log)
    (run,) = requests.get(f"{url}/api/runs", timeout=10).json()
    assert run["calls"] == len(rows) == 62
    assert run["ok"] == sum(r["status"] == "ok" for r in rows)
    assert run["failed"] == sum(r["status"] != "ok" for r in rows) >= 2
    assert run["tokens"] == sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in rows)
    assert run["cost_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in rows))
    assert run["state"] == "running"  # its last call finished just now
    page = requests.get(url, timeout=10).text
    assert f'<td class="n calls">{len(rows)}</td>' in page
    assert f'<td class="n tokens">{run["tokens"]:,}</td>' in page


def test_run_page_latency_errors_and_retries_match_the_log(log: Path, url: str) -> None:
    rows = calls(log)
    page = requests.get(f"{url}/runs/{run_id(log)}", timeout=10).text
    millis = sorted(int(r["duration_s"] * 1000) for r in rows)
    p50 = millis[round(0.5 * len(millis)) - 1] / 1000  # nearest rank, as the page states it
    assert f'<dd id="kpi-latency">{p50:.2f} s /' in page
    retries = sum(r["attempts"] - 1 for r in rows)
    assert f'<dd id="kpi-retries">{retries:,} ' in page
    assert re.search(r'error=InputError">InputError</a></td><td class="n">1</td>', page)
    assert page.count("<svg viewBox") == 5  # throughput, in flight, histogram, tokens, cost
    app = Dashboard(str(log))
    app.runs.refresh(0)
    (stats,) = app.runs.runs.values()  # in flight: call-seconds per second add up to the calls'
    assert sum(stats.inflight().values()) == pytest.approx(sum(r["duration_s"] for r in rows))


def test_calls_filters_and_pages_cover_each_call_once(log: Path, url: str) -> None:
    seen: list[int] = []
    next_url: str | None = f"{url}/calls?run={run_id(log)}"
    while next_url:
        html = requests.get(next_url, timeout=10).text
        seen += ids(html)
        older = re.search(r'id="older" href="([^"]+)"', html)
        next_url = url + older.group(1).replace("&amp;", "&") if older else None
    assert sorted(seen, reverse=True) == seen == sorted((r["id"] for r in calls(log)), reverse=True)
    failed = ids(requests.get(f"{url}/calls", params={"status": "error"}, timeout=10).text)
    assert failed == sorted((r["id"] for r in calls(log, "status = 'error'")), reverse=True)
    by_error = ids(requests.get(f"{url}/calls", params={"error": "InputError"}, timeout=10).text)
    assert by_error == [r["id"] for r in calls(log, "error_class = 'InputError'")]
    searched = ids(requests.get(f"{url}/calls", params={"q": "review 17:"}, timeout=10).text)
    assert searched == [r["id"] for r in calls(log, "inputs LIKE '%review 17:%'")]
    model = ids(requests.get(f"{url}/calls", params={"model": "openai/gpt-4o-mini",
                                                     "agent": "tests.agents.SentimentAgent"}).text)
    expected = sorted((r["id"] for r in calls(log, "model = 'openai/gpt-4o-mini'")), reverse=True)
    assert model == expected[:50] and len(expected) == 60  # a page holds 50


def test_export_csv_and_json_hold_the_filtered_calls(log: Path, url: str) -> None:
    failed = calls(log, "status = 'error' ORDER BY id DESC")
    text = requests.get(f"{url}/calls.csv", params={"status": "error"}, timeout=10).text
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in exported] == [r["id"] for r in failed]
    assert {r["error_class"] for r in exported} == {r["error_class"] for r in failed}
    as_json = requests.get(f"{url}/calls.json", params={"status": "error"}, timeout=10).json()
    assert [r["id"] for r in as_json] == [r["id"] for r in failed]
    assert as_json[0]["inputs"] == failed[0]["inputs"]


def test_one_call_in_full(log: Path, url: str) -> None:
    retried = calls(log, "attempts > 1 AND status = 'ok' LIMIT 1")
    row = retried[0] if retried else calls(log, "status = 'ok' LIMIT 1")[0]
    html = requests.get(f"{url}/calls/{row['id']}", timeout=10).text
    assert json.loads(row["inputs"])["text"] in html and "confidence" in html  # input, output
    assert html.count("<tr><td>") == row["attempts"]  # one line per attempt
    assert requests.get(f"{url}/calls/999999", timeout=10).status_code == 404


def test_markup_from_the_log_is_shown_as_text(log: Path, url: str) -> None:
    (bad,) = calls(log, "error_class = 'ValueError'")
    pages = [url, f"{url}/runs/{run_id(log)}", f"{url}/calls", f"{url}/calls/{bad['id']}",
             f"{url}/calls?{requests.compat.urlencode({'q': XSS})}"]
    for page in pages:
        response = requests.get(page, timeout=10)
        assert "<script>window" not in response.text and "<img src=x" not in response.text, page
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in requests.get(
        f"{url}/calls/{bad['id']}", timeout=10).text


def test_secrets_in_an_older_log_are_redacted(log: Path, url: str) -> None:
    connection = sqlite3.connect(log)
    with connection:  # a row written before redaction existed, straight into the file
        connection.execute(
            "INSERT INTO calls (ts, run_id, agent, status, attempts, duration_s, error_class, "
            "error_message, history, inputs) VALUES (?, 'old', 'x.y', 'error', 1, 1.0, 'AuthError', "
            "?, '[]', ?)", (time.time(), f"bad key {SECRET}", json.dumps({"key": SECRET})))
    connection.close()
    (row,) = calls(log, "run_id = 'old'")
    for page in (f"{url}/calls/{row['id']}", f"{url}/calls.csv?run=old", f"{url}/calls.json?run=old",
                 f"{url}/calls?run=old", f"{url}/runs/old"):
        text = requests.get(page, timeout=10).text
        assert SECRET not in text and "sk-***" in text, page


def test_rerun_writes_the_failed_inputs_and_a_command_that_runs(log: Path, url: str,
                                                                sim_factory: Any) -> None:
    run = run_id(log)
    failed = [r for r in calls(log, "status = 'error' AND run_id = ?", (run,))
              if r["agent"] == "tests.agents.SentimentAgent"]
    html = requests.post(f"{url}/runs/{run}/rerun", timeout=10).text
    command = re.search(r'<pre class="command">(greenagents run tests.agents:SentimentAgent[^<]*)</pre>',
                        html).group(1)
    path = log.parent / f"rerun-{run}-SentimentAgent.jsonl"
    assert command.split("--input ")[1].split()[0] == str(path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        json.loads(r["inputs"]) for r in failed]
    sim: Simulator = sim_factory()
    done = subprocess.run([sys.executable, "-m", *command.split()], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ,
                                                       "OPENAI_BASE_URL": sim.base_url})
    out = path.with_name(path.name.replace(".jsonl", ".out.jsonl")).read_text().splitlines()
    assert len(out) == len(failed), done.stderr  # one result per failed input (42 fails again)


def test_a_post_from_another_site_is_refused(log: Path, url: str) -> None:
    response = requests.post(f"{url}/runs/{run_id(log)}/rerun", headers={"Origin": "http://evil.test"})
    assert response.status_code == 403
    assert not list(log.parent.glob("rerun-*"))


def test_a_token_is_checked_on_every_request(log: Path) -> None:
    with served(log, token="s3cret; =x") as base:  # odd characters survive the cookie
        for page in ("/", "/calls", "/api/runs", "/static/dashboard.css", "/calls.csv"):
            assert requests.get(base + page, timeout=10).status_code == 403, page
        assert requests.get(base, params={"token": "wrong"}, timeout=10).status_code == 403
        browser = requests.Session()
        assert browser.get(base, params={"token": "s3cret; =x"}, timeout=10).status_code == 200
        assert browser.get(f"{base}/calls", timeout=10).status_code == 200  # the cookie
        assert requests.get(f"{base}/api/runs", headers={"Authorization": "Bearer s3cret; =x"},
                            timeout=10).status_code == 200


def test_a_public_host_needs_a_token(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREENAGENTS_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(ga.errors.ConfigError, match="--token"):
        serve(str(log), host="0.0.0.0", port=0)
    done = subprocess.run([sys.executable, "-m", "greenagents", "dashboard", "--db", str(log),
                           "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--token" in done.stderr


def test_a_missing_log_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "greenagents", "dashboard", "--db",
                           str(tmp_path / "none.db")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no execution log at" in done.stderr
    assert done.stderr.count("\n") == 1


def test_the_log_is_opened_read_only(log: Path) -> None:
    app = Dashboard(str(log))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        app.store.connect().execute("DELETE FROM calls")


def test_columns_added_later_show_and_missing_ones_are_not_needed(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    write_log(str(newer), {"r1": 10})
    connection = sqlite3.connect(newer)
    with connection:  # input_index is in the schema now; a newer column still shows
        connection.execute("ALTER TABLE calls ADD COLUMN retry_budget INTEGER")
        connection.execute("UPDATE calls SET retry_budget = id - 1")
    connection.close()
    older = tmp_path / "older.db"  # 0.1's first schema had no payload columns
    connection = sqlite3.connect(older)
    with connection:
        connection.execute("CREATE TABLE calls (id INTEGER PRIMARY KEY, ts REAL, run_id TEXT, "
                           "agent TEXT, model TEXT, status TEXT, attempts INTEGER, duration_s REAL, "
                           "error_class TEXT, error_message TEXT, history TEXT)")
        connection.execute("INSERT INTO calls VALUES (1, ?, 'r0', 'a.b', NULL, 'error', 1, 0.5, "
                           "'ServerError', 'boom', '[]')", (time.time(),))
    connection.close()
    with served(newer) as base:
        page = requests.get(f"{base}/calls", timeout=10).text
        assert "<th>input_index</th>" in page and "<th>retry_budget</th>" in page
    with served(older) as base:
        for page in ("/", "/runs/r0", "/calls", "/calls/1", "/calls.csv"):
            assert requests.get(base + page, timeout=10).status_code == 200, page
        assert "not logged" in requests.get(f"{base}/calls/1", timeout=10).text
        html = requests.post(f"{base}/runs/r0/rerun", timeout=10).text
        assert "keeps no inputs" in html


def test_the_overview_lists_the_latest_200_runs(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    write_log(str(db), {f"run{n:03d}": 2 for n in range(205)}, rate=0.1)  # 10 s apart
    with served(db) as base:
        html = requests.get(base, timeout=10).text
    assert html.count("<tr data-run=") == 200 and "of 205 runs" in html
    assert 'data-run="run204"' in html and 'data-run="run004"' not in html


def test_it_keeps_up_while_a_run_writes(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    tracking.record(ga.Result(target="tests.step", value=0, duration_s=0.01))
    assert tracking.flush()
    stop = threading.Event()

    def writer() -> None:  # the real tracking writer, appending while the dashboard reads
        while not stop.is_set():
            for _ in range(20):
                tracking.record(ga.Result(target="tests.step", value=1, duration_s=0.01))
            tracking.flush()
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with served(db) as base:
            counts = []
            for _ in range(4):
                counts.append(requests.get(f"{base}/api/runs", timeout=10).json()[0]["calls"])
                assert "data-live=\"1\"" in requests.get(base, params={"partial": "1"}).text
                time.sleep(0.6)
    finally:
        stop.set()
        thread.join()
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_the_demo_ends_with_the_command_that_shows_its_calls(tmp_path: Path) -> None:
    env = {name: value for name, value in __import__("os").environ.items()
           if not name.startswith(("OPENAI_", "ANTHROPIC_", "GREENAGENTS_"))}
    env["TMPDIR"] = str(tmp_path)
    demo = subprocess.run([sys.executable, "-m", "greenagents", "demo", "--calls", "12"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert demo.returncode == 0, demo.stderr
    command = demo.stdout.strip().splitlines()[-1].split()
    assert command[:3] == ["greenagents", "dashboard", "--db"]
    assert command[3] == str(tmp_path / "greenagents-demo" / "runs.db")
    server = subprocess.Popen([sys.executable, "-m", *command, "--port", "0"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = re.search(r"(http://\S+)/", server.stdout.readline())
        assert url
        (run,) = requests.get(f"{url.group(1)}/api/runs", timeout=10).json()
        assert run["calls"] == run["ok"] == 12 and run["tokens"] > 0
    finally:
        server.terminate()
        server.wait(timeout=30)


# ------------------------------------------------------------------------- a million calls

MILLION = {"big0000000001": 900_000, "mid0000000002": 99_000, "tiny000000003": 1_000}


@pytest.fixture(scope="session")
def million(tmp_path_factory: pytest.TempPathFactory) -> Dashboard:
    """A 1,000,000-call log through the tracking schema and INSERT (~20 s), folded in once."""
    db = tmp_path_factory.mktemp("million") / "runs.db"
    write_log(str(db), MILLION, rate=400)
    app = Dashboard(str(db))
    app.runs.refresh(0)
    return app


def _steps(app: Dashboard, path: str, query: str = "") -> tuple[int, bytes]:
    """SQLite virtual-machine steps (in thousands) one request costs: work, not time."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    connection = app.store.connect()
    connection.set_progress_handler(count, 1000)
    try:
        body = b"".join(app({"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"},
                            lambda status, headers: None))
    finally:
        connection.set_progress_handler(None, 0)
    return steps[0], body


def test_a_million_calls_every_page_does_bounded_work(million: Dashboard) -> None:
    full_scan, _ = _steps(million, "/calls", "model=no/such-model")  # no index on model: a scan
    runs = json.loads(_steps(million, "/api/runs")[1])
    assert sum(run["calls"] for run in runs) == 1_000_000
    assert {run["run_id"]: run["calls"] for run in runs} == MILLION
    pages = [("/", ""), ("/runs/big0000000001", ""), ("/runs/tiny000000003", ""), ("/calls", ""),
             ("/calls", "run=big0000000001"), ("/calls", "run=tiny000000003&error=CallTimeout"),
             ("/calls", "run=big0000000001&error=CallTimeout&model=openai/gpt-4o-mini"),
             ("/calls", "status=error&before=500000"), ("/calls/123456", "")]
    for path, query in pages:
        steps, body = _steps(million, path, query)
        assert steps < full_scan / 20, (path, query, steps, full_scan)
        assert b"Traceback" not in body


def test_the_token_can_come_from_the_environment(log: Path) -> None:
    env = {**os.environ, "GREENAGENTS_DASHBOARD_TOKEN": "from-env"}
    server = subprocess.Popen([sys.executable, "-m", "greenagents", "dashboard", "--db", str(log),
                               "--host", "0.0.0.0", "--port", "0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        announced = server.stdout.readline()
        assert announced.strip().endswith("/?token=from-env"), (announced, server.stderr)
    finally:
        server.kill()
        server.wait()
