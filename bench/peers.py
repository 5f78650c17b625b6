"""Figure — the peers group: other libraries' own clients inside ``ga.each``, in the peers venv.

What it runs: ``tests/test_peers.py`` (instructor, langchain-openai, litellm, dspy, pydantic-ai,
each 50 calls at once against the simulator at 0.5 s latency) with the peers venv's interpreter
(``python -m bench --setup-peers``), because their pins clash with ours and CI's clean machine
cannot afford the venv (see the README's peers paragraph). Why here: the benchmark job is where
the group runs, so a library release that breaks under greenlets shows up in RESULTS.md. Reported
per library: passed, failed or skipped, and the wall time of each of its ``ga.each`` runs (the
tests record them as JUnit XML properties). No venv: skipped with a note. ``--smoke``: only the
instructor test.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from bench.harness import PEERS_VENV, ROOT, Context, Section, peers_python, table

TITLE = "13. Peers in ga.each (the peers test group)"
#: Library (distribution name) by the name its test functions carry, in the README's order.
LIBRARIES = {"instructor": "instructor", "langchain_openai": "langchain-openai",
             "litellm": "litellm", "dspy": "dspy", "pydantic_ai": "pydantic-ai-slim"}
PROPERTY = "ga.each s: "


def _library(test: str) -> str:
    return next(dist for name, dist in LIBRARIES.items() if test.startswith(f"test_{name}"))


def _versions(python: str) -> dict[str, str]:
    code = ("import importlib.metadata as m\n"
            f"for d in {list(LIBRARIES.values())!r}:\n"
            "    try: print(d, m.version(d))\n"
            "    except m.PackageNotFoundError: print(d, 'missing')")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def _outcome(case: ElementTree.Element) -> str:
    for kind in ("failure", "error", "skipped"):
        found = case.find(kind)
        if found is not None:
            message = (found.get("message") or kind).splitlines()[0][:120].replace("|", "/")
            return f"{'skipped' if kind == 'skipped' else 'FAILED'}: {message}"
    return "passed"


def _run_group(python: str, ctx: Context, report: Path) -> tuple[int, float, str]:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [python, "-m", "pytest", "-m", "peers", "tests/test_peers.py", "-q",
               "-p", "no:cacheprovider", f"--junitxml={report}"]
    if ctx.smoke:
        command += ["-k", "instructor"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=900, check=False)
    tail = [line for line in done.stdout.splitlines() if line.strip()][-1:]
    return done.returncode, time.perf_counter() - began, (tail[0] if tail else "")


def run(ctx: Context) -> Section:
    python = peers_python()
    if python is None:
        note = f"Skipped: no peers venv at {PEERS_VENV} (run `python -m bench --setup-peers`)."
        ctx.log(f"peers: {note}")
        return Section(TITLE, note, [], {"skipped": note})
    ctx.log(f"peers: running tests/test_peers.py with {python}")
    versions = _versions(python)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as work:
        report = Path(work) / "junit.xml"
        status, wall, summary = _run_group(python, ctx, report)
        cases = ElementTree.parse(report).getroot().iter("testcase") if report.exists() else []
        rows, failures, tests = [], [], {}
        for case in cases:
            test, outcome = case.get("name", "?"), _outcome(case)
            library = _library(test)
            each = [f"{p.get('name', '')[len(PROPERTY):]} {float(p.get('value', 'nan')):.2f} s"
                    for p in case.iter("property") if p.get("name", "").startswith(PROPERTY)]
            rows.append([f"{library} {versions.get(library, '?')}", f"`{test}`", outcome,
                         ", ".join(each) or "–", f"{float(case.get('time', 'nan')):.1f} s"])
            tests[test] = {"library": library, "outcome": outcome, "each": each}
            if outcome.startswith("FAILED"):
                failures.append(f"peers: {test}: {outcome}")
    if not rows or status not in (0, 1):
        failures.append(f"peers: pytest exited {status} ({summary or 'no report'})")
    markdown = "\n\n".join([
        f"`tests/test_peers.py` run by the peers venv's interpreter ({python}): each `ga.each` "
        "runs 50 calls at once against the simulator (0.5 s latency, so ≈ 0.5 s is the ideal; "
        "the first run of a library includes its warm-up). On a 2-core machine shared with "
        f"other work: the timings are noisy. Whole group: {wall:.0f} s ({summary}).",
        table(["library", "test", "result", "ga.each wall time", "test time"], rows),
    ])
    return Section(TITLE, markdown, [], {"wall_s": wall, "tests": tests,
                                         "failures": failures})
