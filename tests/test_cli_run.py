"""``greenagents run`` in real subprocesses: output rows, exit codes, resume after SIGKILL, SIGINT."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from greenagents.testing import Simulator

ROW_KEYS = {"index", "ok", "value", "error", "attempts", "duration_s", "usage", "cost_usd", "model"}

AGENTS = """
    from pydantic import BaseModel
    import greenagents as ga

    class Mood(BaseModel):
        label: str

    class MoodAgent(ga.Agent):
        model = "openai/gpt-4o-mini"
        output = Mood

        def prompt(self, text: str) -> str:
            return text
"""

FUNCTIONS = """
    import time

    def double(n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        return n * 2

    def slow(n: int, log: str) -> int:
        time.sleep(0.2)
        with open(log, "a") as f:   # a side effect per call: redone rows would show twice
            f.write(f"{n}\\n")
        return n
"""


def cli(*args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greenagents", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "greenagents", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


def write_lines(path: Path, objects: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def complete_rows(path: Path) -> list[dict[str, Any]]:
    """Rows a resume will keep: every line that ends with a newline."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def wait_for_rows(path: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while len(complete_rows(path)) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "agents.py").write_text(textwrap.dedent(AGENTS))
    (tmp_path / "fns.py").write_text(textwrap.dedent(FUNCTIONS))
    return tmp_path


def test_agent_target_from_a_file_against_the_simulator(work: Path, sim: Simulator) -> None:
    write_lines(work / "in.jsonl", [{"text": f"review {n}"} for n in range(30)])
    proc = cli("run", "agents.py:MoodAgent", "--input", "in.jsonl", "--output", "out/o.jsonl",
               "--concurrency", "10", cwd=work, env={"OPENAI_BASE_URL": sim.base_url})
    assert proc.returncode == 2 and "cannot write output" in proc.stderr  # no out/ directory
    (work / "out").mkdir()
    proc = cli("run", "agents.py:MoodAgent", "--input", "in.jsonl", "--output", "out/o.jsonl",
               "--concurrency", "10", cwd=work, env={"OPENAI_BASE_URL": sim.base_url})
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(work / "out" / "o.jsonl")
    assert sorted(r["index"] for r in rows) == list(range(30))
    assert all(set(r) == ROW_KEYS and r["ok"] for r in rows)
    assert isinstance(rows[0]["value"]["label"], str) and rows[0]["usage"]["prompt_tokens"] > 0
    assert rows[0]["model"] == "openai/gpt-4o-mini" and rows[0]["cost_usd"] > 0
    assert sim.stats()["requests"] == 30
    logged = sqlite3.connect(work / "out" / ".greenagents" / "runs.db")
    assert logged.execute("SELECT count(*) FROM calls WHERE agent = 'agents.MoodAgent'").fetchone() == (30,)


def test_callable_target_malformed_lines_and_exit_codes(work: Path) -> None:
    (work / "in.jsonl").write_text('{"n": 1}\nnot json\n\n[1, 2]\n{"n": -1}\n{"n": 2}\n')
    proc = cli("run", "fns:double", "--input", "in.jsonl", "--output", "out.jsonl", cwd=work)
    assert proc.returncode == 1, proc.stderr
    rows = {r["index"]: r for r in read_rows(work / "out.jsonl")}
    assert sorted(rows) == [0, 1, 3, 4, 5]  # index = line number; the blank line is no row
    assert rows[0]["value"] == 2 and rows[5]["value"] == 4
    assert rows[1]["error"].startswith("InputError: line 2: invalid JSON")
    assert rows[3]["error"].startswith("InputError: line 4: expected a JSON object")
    assert rows[4]["error"] == "ValueError: negative"
    write_lines(work / "good.jsonl", [{"n": n} for n in range(5)])
    proc = cli("run", "fns:double", "--input", "good.jsonl", "--output", "good.out", cwd=work)
    assert proc.returncode == 0 and len(read_rows(work / "good.out")) == 5


def test_stdin_to_stdout(work: Path) -> None:
    proc = cli("run", "fns:double", "--input", "-", "--output", "-", "--no-tracking", cwd=work,
               stdin='{"n": 3}\n{"n": 4}\n')
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(line)["value"] for line in proc.stdout.splitlines()) == [6, 8]
    assert not (work / ".greenagents").exists()


def test_stdin_from_a_slow_producer_writes_rows_as_they_finish(work: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "greenagents", "run", "fns:double", "--input",
                             "-", "--output", "out.jsonl", "--no-tracking"], cwd=work, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write('{"n": 1}\n')
    proc.stdin.flush()
    wait_for_rows(work / "out.jsonl", 1, proc)  # while the producer has not said more
    proc.stdin.write('{"n": 2}\n')
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.communicate()
    assert sorted(row["value"] for row in read_rows(work / "out.jsonl")) == [2, 4]


@pytest.mark.parametrize(("target", "extra", "message"), [
    ("nosuchmodule:f", [], "cannot import nosuchmodule: ModuleNotFoundError"),
    ("fns:nope", [], "fns has no 'nope'"),
    ("missing.py:f", [], "no such file: missing.py"),
    ("fns", [], "expected module:Name"),
    ("fns:double", ["--input", "absent.jsonl"], "cannot read input absent.jsonl"),
    ("fns:double", ["--output", "taken.jsonl"], "pass --resume"),
    ("fns:double", ["--concurrency", "0"], "--concurrency"),
])
def test_usage_errors_are_one_line_and_exit_2(work: Path, target: str, extra: list[str],
                                               message: str) -> None:
    write_lines(work / "in.jsonl", [{"n": 1}])
    write_lines(work / "taken.jsonl", [{"index": 0}])
    args = {"--input": "in.jsonl", "--output": "new.jsonl"}
    args.update(dict(zip(extra[::2], extra[1::2], strict=True)))
    proc = cli("run", target, *[item for pair in args.items() for item in pair], cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    if "--concurrency" not in extra:
        assert proc.stderr.strip().count("\n") == 0, proc.stderr


def start_slow_run(work: Path, rows: int, concurrency: int
                   ) -> tuple[Path, tuple[str, ...], subprocess.Popen[str]]:
    """A ``run`` of ``fns:slow`` over ``rows`` inputs, each logging its number when it runs."""
    log = work / "side-effects.log"
    write_lines(work / "in.jsonl", [{"n": n, "log": str(log)} for n in range(rows)])
    args = ("run", "fns:slow", "--input", "in.jsonl", "--output", "out.jsonl", "--concurrency",
            str(concurrency))
    return log, args, start(*args, cwd=work)


def test_sigkill_then_resume_runs_every_index_once_and_redoes_nothing(work: Path) -> None:
    log, args, proc = start_slow_run(work, 400, 40)
    wait_for_rows(work / "out.jsonl", 100, proc)
    proc.kill()
    proc.communicate()
    kept = {row["index"] for row in complete_rows(work / "out.jsonl")}
    with open(work / "out.jsonl", "a") as out:  # as if the kill had landed mid-line
        out.write('{"index": 399, "ok": tr')
    resumed = cli(*args, "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    indexes = [row["index"] for row in read_rows(work / "out.jsonl")]
    assert sorted(indexes) == list(range(400))  # every index exactly once
    calls = [int(line) for line in log.read_text().split()]
    assert all(calls.count(n) == 1 for n in kept)  # rows finished before the kill: not redone


def test_sigint_stops_promptly_with_finished_rows_written(work: Path) -> None:
    _, _, proc = start_slow_run(work, 200, 5)
    wait_for_rows(work / "out.jsonl", 10, proc)
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert time.monotonic() - interrupted < 3
    assert proc.returncode == 130 and "--resume" in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [  # one clean line: no hub's KeyboardInterrupt, no time
        "interrupted: finished rows are written; add --resume to complete the run"]
    rows = read_rows(work / "out.jsonl")  # whole lines only, nothing torn
    assert 10 <= len(rows) < 200 and all(set(row) == ROW_KEYS for row in rows)


def test_ten_thousand_rows_1000_wide_all_tracked(work: Path) -> None:
    write_lines(work / "in.jsonl", [{"n": n} for n in range(10_000)])
    proc = cli("run", "fns:double", "--input", "in.jsonl", "--output", "out.jsonl",
               "--concurrency", "1000", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert len(read_rows(work / "out.jsonl")) == 10_000
    logged = sqlite3.connect(work / ".greenagents" / "runs.db")
    assert logged.execute("SELECT count(*), count(DISTINCT run_id) FROM calls").fetchone() == (10_000, 1)
