"""``greenagents run --mode batch|auto`` in real subprocesses: SIGKILL and --resume, Ctrl-C,
changed input, the auto rule — the simulator counting uploads and creates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from greenagents.testing import Simulator
from tests.test_cli_run import ROW_KEYS, cli, read_rows, start, work, write_lines

__all__ = ["work"]  # the fixture, shared with test_cli_run

FAST = ("--poll-interval", "0.1")


CLAUDE = """
import greenagents as ga

class Haiku(ga.Agent):
    model = "anthropic/claude-haiku-4-5"

    def prompt(self, text: str) -> str:
        return text
"""
#: target -> the simulator counters one run of it moves (uploads, creates)
TARGETS = {"agents.py:MoodAgent": {"files": 1, "openai_batches": 1},
           "claude.py:Haiku": {"files": 0, "anthropic_batches": 1}}


def _env(sim: Simulator) -> dict[str, str]:
    return {"OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": "test",
            "ANTHROPIC_BASE_URL": sim.anthropic_url, "ANTHROPIC_API_KEY": "test"}


def _batch(*extra: str, target: str = "agents.py:MoodAgent") -> tuple[str, ...]:
    return ("run", target, "--input", "in.jsonl", "--output", "out.jsonl", "--mode", "batch",
            *FAST, *extra)


def _until(sim: Simulator, key: str, value: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while sim.stats()["batches"][key] < value:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {key} within 30 s"
        time.sleep(0.02)


def _check_output(work: Path, n: int) -> list[dict[str, Any]]:
    rows = read_rows(work / "out.jsonl")
    assert [r["index"] for r in rows] == list(range(n))
    assert all(set(r) == ROW_KEYS and r["ok"] for r in rows)
    return rows


def _kill_when(work: Path, sim: Simulator, key: str, *, rows: int,
               target: str = "agents.py:MoodAgent") -> None:
    """Start a batch run of ``rows`` rows; SIGKILL it once the simulator has seen ``key``."""
    write_lines(work / "in.jsonl", [{"text": f"review {n}"} for n in range(rows)])
    (work / "claude.py").write_text(CLAUDE)
    proc = start(*_batch(target=target), cwd=work, env=_env(sim))
    _until(sim, key, 1, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def _resume_once(work: Path, sim: Simulator, *, rows: int,
                 target: str = "agents.py:MoodAgent") -> None:
    """--resume completes the output; one upload (OpenAI) and one create in all."""
    resumed = cli(*_batch("--resume", target=target), cwd=work, env=_env(sim))
    assert resumed.returncode == 0, resumed.stderr
    _check_output(work, rows)
    expected = {"files": 0, "openai_batches": 0, "anthropic_batches": 0, "cancels": 0}
    assert sim.stats()["batches"] == {**expected, **TARGETS[target]}


@pytest.mark.sim(batch_delay=0.3)
def test_batch_mode_writes_every_row_in_order_at_the_batch_price(work: Path,
                                                                  sim: Simulator) -> None:
    write_lines(work / "in.jsonl", [{"text": f"review {n}"} for n in range(20)])
    proc = cli(*_batch(), cwd=work, env=_env(sim))
    assert proc.returncode == 0, proc.stderr
    rows = _check_output(work, 20)
    online = cli("run", "agents.py:MoodAgent", "--input", "in.jsonl", "--output", "on.jsonl",
                 cwd=work, env=_env(sim))
    assert online.returncode == 0, online.stderr
    by_index = {r["index"]: r for r in read_rows(work / "on.jsonl")}
    assert rows[3]["value"] == by_index[3]["value"]
    assert rows[3]["cost_usd"] == pytest.approx(by_index[3]["cost_usd"] / 2)
    assert sim.stats()["batches"]["openai_batches"] == 1


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.sim(batch_delay=3)
def test_sigkill_while_polling_then_resume_submits_nothing_twice(work: Path, sim: Simulator,
                                                                  target: str) -> None:
    created = next(key for key in TARGETS[target] if key.endswith("batches"))
    _kill_when(work, sim, created, rows=12, target=target)  # created: polling now
    _resume_once(work, sim, rows=12, target=target)


@pytest.mark.sim(batch_create_latency=2)
def test_sigkill_between_upload_and_create_then_resume_creates_once(work: Path,
                                                                     sim: Simulator) -> None:
    _kill_when(work, sim, "files", rows=5)  # uploaded; the create waits in the simulator
    assert sim.stats()["batches"]["openai_batches"] == 0  # the create died with the client
    _resume_once(work, sim, rows=5)


@pytest.mark.sim(batch_delay=30)
def test_changed_input_is_refused_naming_the_hash_and_ctrl_c_detaches(work: Path,
                                                                       sim: Simulator) -> None:
    write_lines(work / "in.jsonl", [{"text": f"review {n}"} for n in range(4)])
    proc = start(*_batch(), cwd=work, env=_env(sim))
    _until(sim, "openai_batches", 1, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # not a terminal: detach, say how to resume
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "rerun the same command with --resume" in err
    assert sim.stats()["batches"]["cancels"] == 0
    write_lines(work / "in.jsonl", [{"text": f"changed {n}"} for n in range(4)])
    refused = cli(*_batch("--resume"), cwd=work, env=_env(sim))
    assert refused.returncode == 2
    assert "input file changed" in refused.stderr and "sha256 was" in refused.stderr
    assert sim.stats()["batches"]["openai_batches"] == 1  # nothing submitted, nothing lost


def test_auto_mode_rule_and_bad_targets(work: Path, sim: Simulator) -> None:
    write_lines(work / "in.jsonl", [{"text": "one"}])
    proc = cli("run", "agents.py:MoodAgent", "--input", "in.jsonl", "--output", "out.jsonl",
               "--mode", "auto", cwd=work, env=_env(sim))
    assert proc.returncode == 0 and "--mode auto: online" in proc.stderr
    assert sim.stats()["requests"] == 1 and sim.stats()["batches"]["openai_batches"] == 0
    write_lines(work / "n.jsonl", [{"n": 1}])
    proc = cli("run", "fns:double", "--input", "n.jsonl", "--output", "n-out.jsonl", "--mode",
               "batch", cwd=work)
    assert proc.returncode == 2 and "runs Agent classes" in proc.stderr
    proc = cli("run", "agents.py:MoodAgent", "--input", "-", "--output", "x.jsonl", "--mode",
               "batch", cwd=work, stdin=json.dumps({"text": "x"}))
    assert proc.returncode == 2 and "needs --input and --output files" in proc.stderr


def test_deadline_bounds_an_online_run(work: Path) -> None:
    write_lines(work / "in.jsonl", [{"n": n, "log": str(work / "log")} for n in range(40)])
    proc = cli("run", "fns:slow", "--input", "in.jsonl", "--output", "out.jsonl",
               "--concurrency", "2", "--deadline", "0.5", "--mode", "auto", cwd=work)
    assert proc.returncode == 1, proc.stderr  # auto: 40 rows is small, so online
    rows = read_rows(work / "out.jsonl")
    assert len(rows) == 40 and any("deadline of 0.5s passed" in (r["error"] or "") for r in rows)


@pytest.mark.sim(batch_delay=30)
def test_ctrl_c_at_a_terminal_asks_and_cancels_the_batches(work: Path, sim: Simulator) -> None:
    write_lines(work / "in.jsonl", [{"text": f"review {n}"} for n in range(3)])
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "greenagents", *_batch()], cwd=work,
                            stdin=slave, stdout=slave, stderr=slave, text=True,
                            env={**os.environ, **_env(sim)})
    os.close(slave)
    try:
        _until(sim, "openai_batches", 1, proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        seen = b""
        while b"cancel the provider batches" not in seen:
            seen += os.read(master, 1024)
        os.write(master, b"y\n")
        assert proc.wait(timeout=30) == 130
    finally:
        os.close(master)
    assert sim.stats()["batches"]["cancels"] == 1
    resumed = cli(*_batch("--resume"), cwd=work, env=_env(sim))  # writes what is there
    assert resumed.returncode == 1 and all("BatchCancelled" in (r["error"] or "")
                                           for r in read_rows(work / "out.jsonl"))
