"""Run ids and input indexes in the execution log, and ``greenagents stats`` over it: --run,
--errors, --json/--csv, malformed lines counted, old logs, constant memory on a big log."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import greenagents as ga
from bench.stats_log import write_log
from greenagents import runs, tracking

from .test_tracking import _rows

LONG = "x" * 150  # longer than the table's 100-character cut


def _logged(n: int) -> int:
    tracking.record(ga.Result(target="tests.logged", value=n))
    return n


def test_every_batch_has_its_own_run_id_and_calls_their_input_index(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=str(db))
    ga.each(range(5), _logged)
    ga.batch([(_logged, (n,), {}) for n in range(3)])
    _logged(99)  # outside any batch: the process's run id, no index

    def nested(n: int) -> list[Any]:
        return ga.each([n], _logged)  # a batch inside a call joins the outer run

    ga.each([7], nested)
    tracking.flush()
    rows = _rows(db)
    first, second, alone, inner = rows[:5], rows[5:8], rows[8], rows[9]
    assert len({row["run_id"] for row in first}) == 1
    assert len({row["run_id"] for row in second}) == 1
    assert first[0]["run_id"] != second[0]["run_id"] != runs.PROCESS_RUN_ID
    assert sorted(row["input_index"] for row in first) == [0, 1, 2, 3, 4]
    assert (alone["run_id"], alone["input_index"]) == (runs.PROCESS_RUN_ID, None)
    assert inner["run_id"] not in {first[0]["run_id"], second[0]["run_id"], runs.PROCESS_RUN_ID}


AGENT = """
    import greenagents as ga

    class Echo(ga.Agent):
        model = "openai/gpt-4o-mini"
        retries = 0

        def prompt(self, text: str) -> str:
            return text
"""

FUNCTIONS = f"""
    def check(n: int) -> int:
        if n % 3 == 0:
            raise ValueError("multiple of three {LONG}")
        return n
"""


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greenagents", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def _stats(*args: str, cwd: Path) -> str:
    """``greenagents stats`` in this process (it only reads the log): its output."""
    from click.testing import CliRunner

    from greenagents.cli import cli

    previous = os.getcwd()
    os.chdir(cwd)
    try:
        done = CliRunner().invoke(cli, ["stats", *args])
    finally:
        os.chdir(previous)
    assert done.exit_code == 0, done.output
    return done.output


def _run_id(done: subprocess.CompletedProcess[str]) -> str:
    return done.stderr.split("greenagents run ", 1)[1].split(":", 1)[0]


def test_stats_by_run_with_input_lines_errors_json_and_csv(tmp_path: Path) -> None:
    (tmp_path / "fns.py").write_text(textwrap.dedent(FUNCTIONS))
    lines = [json.dumps({"n": n}) for n in range(10)]
    lines.insert(4, "{broken")  # line 4 is malformed: counted, under the target's name
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    first = _cli("run", "fns:check", "--input", "in.jsonl", "--output", "a.jsonl", cwd=tmp_path)
    second = _cli("run", "fns:check", "--input", "in.jsonl", "--output", "b.jsonl", cwd=tmp_path)
    assert first.returncode == second.returncode == 1, first.stderr
    run = _run_id(second)
    assert run != _run_id(first)

    everything = json.loads(_stats("--json", cwd=tmp_path))
    assert everything["groups"][0]["calls"] == 22
    assert everything["by"] == "target"  # the glossary's word; "agent", the older one, still works
    assert json.loads(_stats("--by", "agent", "--json", cwd=tmp_path))["groups"] == everything["groups"]
    one = json.loads(_stats("--run", run, "--json", "--errors", cwd=tmp_path))
    (group,) = one["groups"]
    assert (group["key"], group["calls"], group["ok"]) == ("fns.check", 11, 6)
    assert any(n == 1 and text.startswith("InputError: ") for n, text in group["errors"])
    failed = one["failures"]
    assert sorted(row["input_index"] for row in failed) == [0, 3, 4, 7, 10]  # lines, not calls
    assert {row["run_id"] for row in failed} == {run}
    assert any(row["error_message"].endswith(LONG) for row in failed)

    table = _stats("--run", run, "--errors", cwd=tmp_path)
    assert f"run {run}  input 0  fns.check  ValueError: multiple of three {LONG}" in table
    by_run = _stats("--by", "run", "--csv", cwd=tmp_path)
    parsed = list(csv.DictReader(io.StringIO(by_run)))
    assert {row["run"] for row in parsed} == {run, _run_id(first)}
    assert all(row["calls"] == "11" for row in parsed)
    assert _stats("--run", "nope", cwd=tmp_path) == "no calls logged for run nope\n"


def test_agent_rows_of_a_run_carry_their_input_line(tmp_path: Path) -> None:
    from greenagents.testing import Simulator

    (tmp_path / "agents.py").write_text(textwrap.dedent(AGENT))
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n\n{"txt": "typo"}\n{"text": "c"}\n')
    with Simulator() as sim:
        done = _cli("run", "agents:Echo", "--input", "in.jsonl", "--output", "out.jsonl",
                    cwd=tmp_path, env={"OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": "sk-x"})
    assert done.returncode == 1, done.stderr
    rows = _rows(tmp_path / ".greenagents" / "runs.db")
    assert sorted((row["input_index"], row["status"]) for row in rows) == [
        (0, "ok"), (2, "error"), (3, "ok")]  # the file's 0-based line numbers, as in out.jsonl
    assert {row["agent"] for row in rows} == {"agents.Echo"}
    assert {row["run_id"] for row in rows} == {_run_id(done)}


def test_a_log_written_before_input_index_existed_is_read_and_extended(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    connection = sqlite3.connect(db)
    old_schema = tracking._SCHEMA.replace(",\n    input_index INTEGER", "")
    assert "input_index" not in old_schema.split("--")[0]
    connection.executescript(old_schema.replace("input_index", "unused_name"))
    connection.execute("INSERT INTO calls (ts, run_id, agent, status, attempts, duration_s, "
                       "history) VALUES (?, 'r1', 'old.agent', 'ok', 1, 0.5, '[]')", (time.time(),))
    connection.commit()
    connection.close()
    (entry,) = tracking.summary(str(db))
    assert (entry["key"], entry["calls"]) == ("old.agent", 1)
    assert abs(entry["p50_s"] - 0.5) <= 0.5 * 0.005  # buckets 1% wide
    assert tracking.failures(str(db)) == []
    ga.configure(tracking=str(db))
    tracking.record(ga.Result(target="new.agent", value=1), index=3)
    tracking.flush()
    assert [row["input_index"] for row in _rows(db)] == [None, 3]


SUMMARISE = """
    import resource, sys
    from greenagents import tracking
    groups = tracking.summary(sys.argv[1])
    assert sum(g["calls"] for g in groups) == int(sys.argv[2]), groups
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_summary_of_a_big_log_runs_in_constant_memory(tmp_path: Path) -> None:
    peaks = {}
    for count in (10_000, 150_000):
        db = tmp_path / f"log{count}.db"
        write_log(db, count)
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(SUMMARISE), str(db),
                               str(count)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        peaks[count] = int(done.stdout) / 1024  # MB (ru_maxrss is in KiB on Linux)
    # Rows held in Python would cost ~60 MB more for 140,000 more rows; SQLite's sorter and
    # page cache are bounded, so the peak barely moves.
    assert peaks[150_000] - peaks[10_000] < 15, peaks
