"""The CLI under misuse, in real subprocesses: one locked output per run, one line per mistake.

Each case printed a traceback (or, for two runs on one output, silently duplicated every row)
before.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from greenagents import tracking

from .test_cli_run import cli, read_rows, start_slow_run, wait_for_rows, work, write_lines

__all__ = ["work"]  # the fixture, re-exported for pytest


def one_line_exit_2(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


# -- one run per output ----------------------------------------------------------------------

def test_a_second_run_on_a_busy_output_is_refused_and_the_lock_dies_with_the_first(
        work: Path) -> None:
    """Before: both runs appended, every index twice, and a later --resume accepted the file."""
    _, args, first = start_slow_run(work, 600, 5)  # ~24 s: outlives the checks
    try:
        wait_for_rows(work / "out.jsonl", 5, first)
        one_line_exit_2(cli(*args, "--resume", cwd=work), "is being written by another")
        one_line_exit_2(cli(*args, cwd=work), "is being written by another")
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        first.communicate()
    resumed = cli(*args, "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    indexes = [row["index"] for row in read_rows(work / "out.jsonl")]
    assert sorted(indexes) == list(range(600))  # every index once


def test_resume_refuses_an_output_with_duplicated_indexes_and_says_which(work: Path) -> None:
    write_lines(work / "in.jsonl", [{"n": n} for n in range(3)])
    rows = [{"index": i, "ok": True} for i in (0, 1, 1, 2, 2)]
    write_lines(work / "out.jsonl", rows)
    one_line_exit_2(cli("run", "fns:double", "--input", "in.jsonl", "--output", "out.jsonl",
                        "--resume", cwd=work), "2 index(es) appear more than once (1, 2)")


def test_a_full_disk_is_one_line(work: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    write_lines(work / "in.jsonl", [{"n": 1}])
    one_line_exit_2(cli("run", "fns:double", "--input", "in.jsonl", "--output", "/dev/full",
                        "--no-tracking", cwd=work), "cannot write output /dev/full: No space left")


def test_run_with_a_bad_setting_in_the_environment_is_one_line(work: Path) -> None:
    write_lines(work / "in.jsonl", [{"n": 1}])
    one_line_exit_2(cli("run", "fns:double", "--input", "in.jsonl", "--output", "o.jsonl",
                        cwd=work, env={"GREENAGENTS_TIMEOUT": "0"}), "timeout")


# -- stats ---------------------------------------------------------------------------------------

def test_stats_with_a_bad_setting_in_the_environment_is_one_line(tmp_path: Path) -> None:
    one_line_exit_2(cli("stats", cwd=tmp_path, env={"GREENAGENTS_MAX_CONCURRENCY": "many"}),
                    "invalid setting in GREENAGENTS_* environment variables: max_concurrency")


def test_stats_on_a_file_that_is_not_sqlite_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("hello\n" * 100)
    one_line_exit_2(cli("stats", "--db", "notes.db", cwd=tmp_path), "file is not a database")


def test_stats_on_sqlite_without_the_table_is_one_line(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE x (a)")
    one_line_exit_2(cli("stats", "--db", "other.db", cwd=tmp_path),
                    "without a calls table, not a greenagents execution log")


def test_stats_on_a_log_copied_without_its_wal_says_to_copy_both(tmp_path: Path) -> None:
    original = tmp_path / "runs.db"
    writer = sqlite3.connect(original)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # everything stays in runs.db-wal, as mid-run
    writer.executescript(tracking._SCHEMA)
    writer.commit()
    shutil.copy(original, tmp_path / "copy.db")
    one_line_exit_2(cli("stats", "--db", "copy.db", cwd=tmp_path), "copy both files together")
    writer.close()


# -- sim -------------------------------------------------------------------------------------

def test_sim_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "greenagents", "sim", "--port", str(port)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    one_line_exit_2(proc, f"cannot listen on 127.0.0.1:{port} (Address already in use)")


def test_rows_are_plain_json(work: Path) -> None:
    """Sanity for the helpers above: a normal run still writes and exits 0."""
    write_lines(work / "in.jsonl", [{"n": 2}])
    assert cli("run", "fns:double", "--input", "in.jsonl", "--output", "o.jsonl",
               cwd=work).returncode == 0
    assert json.loads((work / "o.jsonl").read_text())["value"] == 4
