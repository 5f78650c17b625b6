"""The execution log: every call recorded once, payloads only when asked, no secrets, no loss at exit."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import greenagents as ga
from greenagents import errors, tracking
from greenagents.testing import Simulator

from .agents import SentimentAgent, at
from .conftest import run_python


def _rows(db: Path) -> list[dict[str, Any]]:
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        connection.close()


def test_ten_thousand_calls_1000_wide_none_lost(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")

    def work(n: int) -> int:  # records from inside 1,000 concurrent greenlets, as Agent.call does
        tracking.record(ga.Result(target="tests.work", value=n, duration_s=0.001))
        return n

    started = time.perf_counter()
    results = ga.each(range(10_000), work, max_concurrent=1000)
    assert tracking.flush(timeout=60)
    elapsed = time.perf_counter() - started
    assert all(r.ok for r in results)
    counted = sqlite3.connect(db).execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone()
    assert counted == (10_000, 10_000), elapsed


def test_agent_calls_are_recorded_with_tokens_cost_and_history(tmp_path: Path, sim: Simulator) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    agent = at(SentimentAgent, sim.base_url)
    assert agent.call(text="I love it").ok
    assert not agent.call(text=42).ok  # an input error is a call too
    tracking.flush()
    ok, failed = _rows(db)
    assert ok["agent"] == "tests.agents.SentimentAgent" and ok["status"] == "ok"
    assert ok["model"] == "openai/gpt-4o-mini" and ok["attempts"] == 1
    assert ok["prompt_tokens"] > 0 and ok["cost_usd"] > 0 and ok["run_id"] == tracking.RUN_ID
    assert json.loads(ok["history"])[0]["number"] == 1
    assert ok["inputs"] is None and ok["output"] is None  # payloads are off by default
    assert failed["status"] == "error" and failed["error_class"] == "InputError"


def test_payloads_only_when_asked_and_never_a_key(tmp_path: Path, sim: Simulator) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}", tracking_payloads=True)
    assert at(SentimentAgent, sim.base_url).call(text="great").ok
    leaked = ga.Result(target="t", error=errors.AuthError("key sk-abcdef123456 was refused"))
    tracking.record(leaked, {"api_key": "sk-abcdef123456"})
    tracking.flush()
    agent_row, leaked_row = _rows(db)
    assert json.loads(agent_row["inputs"]) == {"text": "great"}
    assert json.loads(agent_row["output"])["label"] in ("positive", "negative", "neutral")
    assert "abcdef123456" not in json.dumps(leaked_row)


def test_summary_groups_and_percentiles(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=str(db))
    for n in range(20):
        failed = n % 4 == 0
        tracking.record(ga.Result(target="a" if n % 2 else "b", duration_s=n / 10, model="m",
                                  error=errors.ServerError("boom") if failed else None))
    tracking.flush()
    by_agent = {entry["key"]: entry for entry in tracking.summary(str(db))}
    assert by_agent["a"]["calls"] == 10 and by_agent["a"]["ok"] == 10
    assert by_agent["b"]["ok"] == 5 and by_agent["b"]["errors"] == [(5, "ServerError: boom")]
    (by_model,) = tracking.summary(str(db), by="model")
    assert by_model["calls"] == 20 and 0.9 * 0.995 <= by_model["p50_s"] <= 1.0  # buckets 1% wide
    assert tracking.summary(str(db), since=time.time() + 60) == []


def test_unpatched_threads_write_everything_at_exit(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    proc = run_python(f"""
        import warnings
        import greenagents as ga
        from greenagents import tracking
        warnings.simplefilter("ignore")
        ga.configure(tracking="sqlite:///{db}")
        def work(n):
            tracking.record(ga.Result(target="thread", value=n))
        ga.each(range(500), work, max_concurrent=50)
        # no flush: the atexit hook must write what is still queued
    """)
    assert proc.returncode == 0, proc.stderr
    assert len(_rows(db)) == 500
