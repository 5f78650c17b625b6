"""Failures are never silent: the batch warning, max_errors/Aborted, call shapes checked up front,
Ctrl-C keeping finished Results, and the CLI's summaries and exit statuses (issue 14)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import greenagents as ga
from greenagents import errors
from greenagents.testing import Simulator

from .agents import SentimentAgent


def _failed_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ga.CallsFailedWarning)]


def test_a_batch_of_failures_warns_once_by_type_with_the_first_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    class Agent(ga.Agent):
        model = "openai/gpt-4o-mini"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = ga.each(["x"] * 200, Agent)
    assert not any(r.ok for r in results)
    [message] = _failed_warnings(caught)
    assert "200 of 200 calls failed" in message
    assert "200 × ConfigError: no API key for openai: set OPENAI_API_KEY" in message
    assert caught[0].filename == __file__  # points at the caller's line


def test_the_warning_counts_each_error_type_and_can_be_turned_off() -> None:
    def flaky(n: int) -> int:
        if n % 3 == 0:
            raise ValueError(f"bad {n}")
        if n % 3 == 1:
            raise KeyError(n)
        return n

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ga.each(range(9), flaky)
        ga.each(range(9), flaky, warn_failures=False)
        ga.each(range(9), lambda n: n)
        list(ga.stream([(flaky, (n,), {}) for n in range(3)]))
    first, streamed = _failed_warnings(caught)
    assert "6 of 9 calls failed" in first and "3 × ValueError: bad 0" in first
    assert "3 × KeyError: 1" in first
    assert "2 of 3 calls failed" in streamed


def test_max_errors_stops_new_calls_and_aborts_the_rest_quickly() -> None:
    started: list[int] = []

    def call(n: int) -> int:
        started.append(n)
        if n < 5:
            raise ValueError(f"broken {n}")
        time.sleep(30)  # would hold the run for 30 s if it were not stopped
        return n

    begin = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = ga.each(range(1000), call, max_concurrent=50, max_errors=2)
    assert time.monotonic() - begin < 10
    assert len(results) == 1000 and [r.index for r in results] == list(range(1000))
    real = [r for r in results if isinstance(r.error, ValueError)]
    aborted = [r for r in results if isinstance(r.error, errors.Aborted)]
    assert len(real) >= 3 and len(real) + len(aborted) == 1000
    assert "max_errors=2" in str(aborted[-1].error)
    assert len(started) < 200  # no new calls started once past the limit
    [message] = _failed_warnings(caught)
    assert "the run stopped there (max_errors=2)" in message and "× Aborted" in message


def test_max_errors_on_a_lazy_stream_yields_one_result_per_input() -> None:
    calls = ((lambda n: 1 / 0, (n,), {}) for n in range(300))
    results = list(ga.stream(calls, max_errors=0, max_concurrent=5, warn_failures=False))
    assert sorted(r.index for r in results) == list(range(300))
    assert isinstance(results[0].error, ZeroDivisionError)
    assert sum(isinstance(r.error, errors.Aborted) for r in results) > 250


def test_max_errors_none_and_enough_room_change_nothing() -> None:
    results = ga.each(range(10), lambda n: 1 // (n % 2), max_errors=5, warn_failures=False)
    assert sum(r.ok for r in results) == 5
    assert not any(isinstance(r.error, errors.Aborted) for r in results)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_max_errors_must_be_a_count(bad: Any) -> None:
    with pytest.raises(errors.ConfigError, match="max_errors must be an int >= 0"):
        ga.batch([(abs, (1,), {})], max_errors=bad)


def test_a_list_with_a_call_that_can_never_work_raises_before_anything_runs() -> None:
    ran: list[int] = []
    good = (ran.append, (1,), {})
    for bad in ["not a call", (42, {}), (abs, (1,), {}, "extra"), (abs, "x")]:
        with pytest.raises(errors.InputError, match=r"call #1 is .*\(fn, kwargs\)"):
            ga.batch([good, bad, good])  # type: ignore[list-item]
        with pytest.raises(errors.InputError):
            ga.stream([good, bad])  # type: ignore[list-item]
    with pytest.raises(errors.InputError, match="fn is 3, not a callable"):
        ga.each([1, 2], 3)  # type: ignore[arg-type]
    assert ran == []


def test_agent_batch_and_each(sim: Simulator) -> None:
    agent = SentimentAgent.with_options(base_url=sim.base_url)
    results = agent.batch([{"text": "good"}, {"text": "bad"}], max_concurrent=2)
    assert [r.ok for r in results] == [True, True] and results[1].index == 1
    assert [r.ok for r in agent.each(["a", "b", "c"])] == [True, True, True]
    with pytest.raises(errors.InputError, match=r"SentimentAgent.batch\(\) takes dicts of inputs"):
        agent.batch(["good"])  # type: ignore[list-item]
    lazy = agent.batch(iter(["good", {"text": "x"}]), warn_failures=False)  # type: ignore[arg-type]
    assert isinstance(lazy[0].error, errors.InputError) and lazy[1].ok


INTERRUPTED = """
    import greenagents.monkey
    import sys, time
    import greenagents as ga

    def call(n):
        time.sleep(0.1 if n < 5 else 60)
        return n

    finished = []

    def seen(result):
        finished.append(result)
        if len(finished) == 5:
            print("started", flush=True)  # five done, five waiting: time for Ctrl-C

    try:
        ga.batch([(call, (n,), {}) for n in range(10)], on_result=seen)
    except KeyboardInterrupt as stop:
        print(type(stop).__name__, sorted(r.value for r in stop.results), flush=True)
        sys.exit(3)
"""


def test_ctrl_c_in_a_batch_keeps_the_finished_results_without_gevent_noise() -> None:
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(INTERRUPTED)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "started"
    time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 3, (out, err)
    assert out.strip() == "Interrupted [0, 1, 2, 3, 4]"
    assert err == "", err  # no hub traceback, no bare "KeyboardInterrupt", no timestamp


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greenagents", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_demo_with_a_wrong_key_shows_the_error_and_exits_1(tmp_path: Path) -> None:
    with Simulator(api_key="sk-right-key-0000") as sim:
        done = _cli("demo", "--calls", "6", "--model", "openai/gpt-4o-mini", cwd=tmp_path,
                    env={"OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": "sk-wrong-key-1111"})
    assert done.returncode == 1, done
    assert "ok / failed" in done.stdout and "0 / 6" in done.stdout
    assert "6 × AuthError" in done.stderr and "sk-wrong-key-1111" not in done.stderr + done.stdout


FUNCTIONS = """
    import time

    def check(n: int) -> int:
        if n < 0:
            raise ValueError(f"negative: {n}")
        time.sleep(0.05)
        return n
"""


def test_run_reports_to_a_non_terminal_stderr_and_stops_past_max_errors(tmp_path: Path) -> None:
    (tmp_path / "fns.py").write_text(textwrap.dedent(FUNCTIONS))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"n": n if n % 2 else -n - 1}) + "\n"
                                               for n in range(200)) + "not json\n")
    done = _cli("run", "fns:check", "--input", "in.jsonl", "--output", "out.jsonl",
                "--concurrency", "4", cwd=tmp_path)
    assert done.returncode == 1
    assert re.search(r"^greenagents run [0-9a-f]{12}: 201 rows written to out.jsonl: 100 ok, "
                     r"101 failed$", done.stderr, re.M), done.stderr
    assert "100 × ValueError: negative: -1" in done.stderr
    assert "1 × InputError: line 201" in done.stderr

    stopped = _cli("run", "fns:check", "--input", "in.jsonl", "--output", "stopped.jsonl",
                   "--concurrency", "4", "--max-errors", "3", cwd=tmp_path)
    assert stopped.returncode == 1
    rows = [json.loads(line) for line in (tmp_path / "stopped.jsonl").read_text().splitlines()]
    assert sum(not row["ok"] for row in rows) >= 4 and len(rows) < 50  # the rest never ran
    assert "more than --max-errors 3 calls failed" in stopped.stderr
    assert "add --resume to run them" in stopped.stderr
    resumed = _cli("run", "fns:check", "--input", "in.jsonl", "--output", "stopped.jsonl",
                   "--concurrency", "4", "--resume", cwd=tmp_path)
    assert resumed.returncode == 1, resumed.stderr
    rows = [json.loads(line) for line in (tmp_path / "stopped.jsonl").read_text().splitlines()]
    assert sorted(row["index"] for row in rows) == list(range(201))  # each input exactly once

