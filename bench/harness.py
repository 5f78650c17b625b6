"""The shared benchmark harness: child processes, RSS/CPU probes, repetitions, medians, tables.

Every measurement runs in a fresh child process (``python -m bench.child SPEC``) so that gevent's
monkey-patching never leaks into the thread and asyncio contenders, and so that each child's
memory is its own. The simulator runs in yet another process (``Simulator.start_process()``);
its CPU is never counted. Repetitions alternate the contenders (rotating their order each round)
so a burst of load from another process on this shared machine hits all of them alike; a result
is reported as the median and the min–max spread of its repetitions.

Child-side helpers (:func:`raise_nofile`, :func:`rss_kb`, :func:`reset_peak_rss`,
:func:`peak_rss_kb`) only use the standard library, so a child can import them before or after
patching.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: A second interpreter for peers whose dependencies clash with ours (LiteLLM pins openai < 3):
#: a venv with ``--system-site-packages`` holding only pyproject's ``peers`` extra. Created by
#: ``python -m bench --setup-peers``; absent, those contenders and ``bench.peers`` are skipped
#: with a note.
PEERS_VENV = Path(os.environ.get("GREENAGENTS_BENCH_PEERS",
                                 Path.home() / ".cache" / "greenagents-bench" / "peers"))


# ---------------------------------------------------------------- child side: resources, memory

def raise_nofile() -> int:
    """Raise this process's open-file limit (soft) to its hard limit; return the new limit.

    10,000 concurrent connections need 10,000 descriptors; the default soft limit is often 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} missing from /proc/self/status")


def rss_kb() -> int:
    """Resident set size of this process now, in KiB (Linux ``VmRSS``)."""
    return _status_kb("VmRSS")


def peak_rss_kb() -> int:
    """Peak resident set size since the last :func:`reset_peak_rss`, in KiB (``VmHWM``)."""
    return _status_kb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0), so the peak measured next is the peak
    *of the run*, not of the imports before it. False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def emit(report: dict[str, Any]) -> None:
    """A child's one line of output: its report as JSON (the parent reads the last line)."""
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- parent side: running children

def peers_python() -> str | None:
    """The peers venv's interpreter, if it was set up."""
    python = PEERS_VENV / "bin" / "python"
    return str(python) if python.exists() else None


def run_child(spec: dict[str, Any], *, timeout: float, python: str | None = None) -> dict[str, Any]:
    """Run ``python -m bench.child SPEC`` and return its JSON report.

    A child that fails, times out or prints no report yields ``{"error": "..."}`` (its last
    stderr line), so one broken contender never sinks the whole benchmark run.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM: no network at import
    env["PYTHONWARNINGS"] = "ignore"
    command = [python or sys.executable, "-m", "bench.child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            report: dict[str, Any] = json.loads(lines[-1])
            return report
        except json.JSONDecodeError:
            pass
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return {"error": (tail[-1] if tail else f"exit status {done.returncode}")[:300]}


# ---------------------------------------------------------------- statistics

@dataclass
class Samples:
    """Repeated measurements of one quantity; errors are kept beside the numbers."""

    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, value: float | None, error: str | None = None) -> None:
        if value is None:
            self.errors.append(error or "no value")
        else:
            self.values.append(value)

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")


def rounds(keys: Sequence[str], repeat: int) -> Iterator[tuple[int, str]]:
    """``(round, key)`` pairs: every key once per round, the order rotated each round.

    >>> list(rounds(["a", "b"], 2))
    [(0, 'a'), (0, 'b'), (1, 'b'), (1, 'a')]
    """
    for number in range(repeat):
        shift = number % len(keys) if keys else 0
        for key in [*keys[shift:], *keys[:shift]]:
            yield number, key


# ---------------------------------------------------------------- tables

def fmt(value: float, unit: str = "") -> str:
    """A number with 3 significant digits (or "–" for missing)."""
    if value != value:  # NaN
        return "–"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return text + unit


def cell(samples: Samples, unit: str = "") -> str:
    """``median (min–max)``, or the error when no repetition produced a number."""
    if not samples.ok:
        return "failed: " + samples.errors[0][:60] if samples.errors else "–"
    if len(samples.values) == 1:
        return fmt(samples.median, unit)
    return f"{fmt(samples.median, unit)} ({fmt(samples.low)}–{fmt(samples.high)})"


def ratio(ours: Samples, theirs: Samples) -> str:
    """greenagents' median ÷ this contender's median (below 1: greenagents uses less)."""
    if not (ours.ok and theirs.ok) or theirs.median == 0:
        return "–"
    return f"{ours.median / theirs.median:.2f}×"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- run context

@dataclass
class Section:
    """One figure's part of RESULTS.md: markdown (table + reading) and the plots it drew."""

    title: str
    markdown: str
    plots: list[Path] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a figure needs: the mode's sizes, where to write, and a log for progress lines."""

    mode: str                       # "smoke", "quick" or "full"
    out: Path                       # where RESULTS.md and the PNGs go
    repeat: int
    started: float = field(default_factory=time.monotonic)
    cache: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)  # reports, shared
    notes: dict[str, str] = field(default_factory=dict)   # contender -> why it was skipped
    checked: set[str] = field(default_factory=set)         # contenders known to be usable
    skipped: dict[tuple[str, int], str] = field(default_factory=dict)  # (contender, N) -> why
    sizes: list[int] | None = None  # --sizes: only these N, in the figures that sweep N

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    def pick(self, smoke: Any, quick: Any, full: Any) -> Any:
        """The value for this mode."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.mode]

    def log(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {text}", file=sys.stderr, flush=True)


    def usable(self, key: str) -> bool:
        """Whether contender ``key`` can run here; a missing peer library is noted, once."""
        from bench.clients import CONTENDERS

        if key in self.checked:
            return True
        if key in self.notes:
            return False
        contender = CONTENDERS[key]
        reason = None
        if contender.venv and peers_python() is None:
            reason = f"no peers venv at {PEERS_VENV} (run `python -m bench --setup-peers`)"
        elif contender.peer:  # find_spec, not import: LiteLLM takes seconds to import
            check = [(peers_python() if contender.venv else None) or sys.executable, "-c",
                     "import importlib.util, sys; "
                     f"sys.exit(importlib.util.find_spec({contender.peer!r}) is None)"]
            done = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                reason = f"`{contender.peer}` is not installed (pip install -e \".[bench]\")"
        if reason is not None:
            self.notes[key] = reason
            self.log(f"skipping {key}: {reason}")
            return False
        self.checked.add(key)
        return True


def python_for(key: str) -> str | None:
    """The interpreter a contender's child runs under (None: this one)."""
    from bench.clients import CONTENDERS

    return peers_python() if CONTENDERS[key].venv else None


@contextmanager
def simulator(**options: Any) -> Iterator[Any]:
    """The simulator in a child process (its CPU is not the client's), stopped on exit."""
    from greenagents.testing import Simulator

    handle = Simulator(**options).start_process()
    try:
        yield handle
    finally:
        handle.stop()


def measure_calls(ctx: Context, base_url: str, keys: Sequence[str], n: int, width: int, *,
                  tag: str, timeout: float, extra: dict[str, Any] | None = None,
                  repeat: int | None = None,
                  give_up_after_failure: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Reports of ``repeat`` (default ``ctx.repeat``) alternating runs of each contender: ``n``
    calls, ``width`` wide.

    Reports are cached in ``ctx`` under ``(tag, key, n, width)``, so a figure that needs the same
    runs as another (memory reuses the fan-out's) does not repeat them. A contender that failed or
    timed out is not run again at this size (``give_up_after_failure``): its first failure is
    what the table shows, and the time budget goes to the others.
    """
    keys = [key for key in keys if ctx.usable(key)]
    todo = [key for key in keys if (tag, key, n, width) not in ctx.cache]
    for key in todo:
        ctx.cache[(tag, key, n, width)] = []
    from bench.clients import CONTENDERS

    repeat = ctx.repeat if repeat is None else repeat
    for number, key in rounds(todo, repeat):
        reports = ctx.cache[(tag, key, n, width)]
        if give_up_after_failure and any("error" in r for r in reports):
            continue
        spec = {"task": "calls", "contender": key, "green": CONTENDERS[key].green,
                "base_url": base_url, "n": n, "width": width, **(extra or {})}
        report = run_child(spec, timeout=timeout, python=python_for(key))
        reports.append(report)
        summary = report.get("error") or (f"wall {report['wall']:.2f}s cpu {report['cpu']:.2f}s "
                                          f"ok {report['ok']}/{n}")
        ctx.log(f"  {tag} n={n} w={width} round {number + 1}/{repeat} {key}: {summary}")
    return {key: ctx.cache[(tag, key, n, width)] for key in keys}


def samples(reports: Iterable[dict[str, Any]], value: Callable[[dict[str, Any]], float],
            complete: bool = True) -> Samples:
    """One quantity over repetitions; a report with an error (or, when ``complete``, with failed
    calls) counts as an error, never as a number."""
    out = Samples()
    for report in reports:
        if "error" in report:
            out.add(None, report["error"])
        elif complete and report.get("ok") != report.get("n"):
            out.add(None, f"only {report.get('ok')}/{report.get('n')} calls succeeded")
        else:
            out.add(value(report))
    return out


def standing(ours: Samples, others: dict[str, Samples], unit: str = "", tie: float = 0.03) -> str:
    """One sentence on where greenagents stands among ``others`` (lower is better); medians
    within ``tie`` (3%) of each other are called level, not a win or a loss.

    >>> standing(Samples([1.0]), {"a": Samples([2.0]), "b": Samples([0.5]), "c": Samples([1.01])})
    'greenagents 1; ahead of a (2, 0.50×); level with c (1.01, 0.99×); behind b (0.5, 2.00×)'
    """
    if not ours.ok:
        return "greenagents failed: " + (ours.errors[0] if ours.errors else "?")
    groups: dict[str, list[str]] = {"ahead of": [], "level with": [], "behind": []}
    for key, theirs in others.items():
        if not theirs.ok:
            continue
        share = ours.median / theirs.median if theirs.median else float("inf")
        group = "level with" if abs(share - 1) <= tie else "ahead of" if share < 1 else "behind"
        groups[group].append(f"{key} ({fmt(theirs.median, unit)}, {share:.2f}×)")
    parts = [f"greenagents {fmt(ours.median, unit)}"]
    parts += [f"{name} {', '.join(items)}" for name, items in groups.items() if items]
    return "; ".join(parts)
