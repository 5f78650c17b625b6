"""``greenagents`` help, ``demo``, ``stats`` and ``sim`` in real subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .test_cli_run import cli, write_lines


def test_help_lists_the_commands_and_patches_without_warnings(tmp_path: Path) -> None:
    proc = subprocess.run(["greenagents", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert all(name in proc.stdout for name in ("demo", "run", "stats", "sim"))
    assert "Warning" not in proc.stderr, proc.stderr


def test_demo_against_the_simulator(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("OPENAI_", "ANTHROPIC_", "GREENAGENTS_"))}
    env["TMPDIR"] = str(tmp_path)  # where the demo's log goes
    proc = subprocess.run([sys.executable, "-m", "greenagents", "demo", "--calls", "30"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    for label in ("calls", "ok / failed", "wall time", "one by one", "speed-up", "retries taken",
                  "peak memory", "tokens", "cost"):
        assert label in proc.stdout, proc.stdout
    assert re.search(r"^calls\s+30$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^speed-up\s+\d+x$", proc.stdout, re.M), proc.stdout


def test_demo_with_a_real_model_but_no_key_is_a_usage_error(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    proc = cli("demo", "--model", "openai/gpt-4o-mini", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "no API key for openai" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stats_summarises_the_log_of_a_run(tmp_path: Path) -> None:
    (tmp_path / "fns.py").write_text("def check(n):\n    assert n % 3, 'multiple of three'\n"
                                     "    return n\n")
    write_lines(tmp_path / "in.jsonl", [{"n": n} for n in range(30)])
    assert cli("run", "fns:check", "--input", "in.jsonl", "--output", "out.jsonl",
               cwd=tmp_path).returncode == 1
    proc = cli("stats", "--since", "1h", cwd=tmp_path)  # default: .greenagents/runs.db here
    assert proc.returncode == 0, proc.stderr
    header, rule, row, *rest = proc.stdout.splitlines()
    assert header.split() == ["target", "calls", "ok", "p50", "p95", "tokens", "cost", "cached",
                               "saved", "stopped"]
    assert set(rule) == {"-", " "}
    assert row.split()[:3] == ["fns.check", "30", "66.7%"]
    assert any("10  fns.check  AssertionError: multiple of three" in line for line in rest)
    by_model = cli("stats", "--db", str(tmp_path / ".greenagents" / "runs.db"), "--by", "model",
                   cwd=tmp_path)
    assert by_model.returncode == 0 and by_model.stdout.startswith("model")


def test_stats_usage_errors(tmp_path: Path) -> None:
    missing = cli("stats", "--db", "nope.db", cwd=tmp_path)
    assert missing.returncode == 2 and "no execution log at nope.db" in missing.stderr
    bad_age = cli("stats", "--since", "5x", cwd=tmp_path)
    assert bad_age.returncode == 2 and "use a number and a unit" in bad_age.stderr


def test_sim_serves_until_terminated(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "greenagents", "sim", "--latency", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert re.match(r"greenagents sim listening on http://127\.0\.0\.1:\d+/v1",
                        proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
