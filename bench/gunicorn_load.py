"""Figure 6 — a web app: one gunicorn worker serving an endpoint that makes one agent call.

What it measures: throughput (requests/s) and latency percentiles (p50, p99) of
``examples/gunicorn_app`` (``GET /sentiment``: one ``SentimentAgent.call`` of 1 s against the
simulator) under ``wrk`` holding C connections open for D seconds, in two set-ups of one worker:

* ``-k gevent`` with the example's ``gunicorn.conf.py`` (patched first, ``worker_connections``
  raised above C): every request waits on the model in its own greenlet;
* ``-k gthread --threads T`` without patching: T requests wait on the model at once, the rest
  queue — what a threaded deployment of the same code gets.

Why: agent calls inside a web request are the other common way to use greenagents; the question
is how many such requests one worker can hold. Ideal throughput is C ÷ latency (gevent) and
T ÷ latency (gthread). Needs ``wrk`` (``apt-get install wrk``); without it the figure is
skipped with a note.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

from bench import plots
from bench.harness import ROOT, Context, Samples, Section, cell, ratio, rounds, simulator, table

APP = ROOT / "examples" / "gunicorn_app"
SETUPS = {"gevent": "gunicorn -k gevent (greenagents)", "gthread": "gunicorn -k gthread"}
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _command(setup: str, port: int, connections: int, threads: int) -> list[str]:
    base = [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
            "--log-level", "warning"]
    if setup == "gevent":
        return [*base, "-c", str(APP / "gunicorn.conf.py"), "--worker-connections",
                str(connections * 2)]
    return [*base, "--chdir", str(APP), "-k", "gthread", "--threads", str(threads),
            "--worker-connections", str(connections * 2), "--timeout", "120", "app:app"]


def _wait_ready(url: str, deadline_s: float = 30.0) -> None:
    ends = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
                return
        except OSError:
            if time.monotonic() > ends:
                raise
            time.sleep(0.2)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 latency (s), errors and non-2xx count from ``wrk --latency``."""
    report: dict[str, Any] = {}
    if found := re.search(r"Requests/sec:\s+([\d.]+)", output):
        report["rps"] = float(found.group(1))
    for pct in ("50", "99"):
        if found := re.search(rf"^\s+{pct}%\s+(\S+)", output, re.M):
            report[f"p{pct}"] = _seconds(found.group(1))
    if found := re.search(r"(\d+) requests in", output):
        report["requests"] = int(found.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    report["socket_errors"] = sum(map(int, errors.groups())) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    report["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return report


def one_run(setup: str, sim_url: str, connections: int, threads: int, duration: int) -> dict[str, Any]:
    """Start a fresh gunicorn, warm it up with one request, load it with wrk, stop it."""
    port = _free_port()
    env = {**os.environ, "OPENAI_BASE_URL": sim_url, "OPENAI_API_KEY": "sk-bench",
           "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    server = subprocess.Popen(_command(setup, port, connections, threads), cwd=APP, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/sentiment?text=great"
    try:
        _wait_ready(url)
        load = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                               "--timeout", "60s", url], capture_output=True, text=True,
                              timeout=duration + 120, check=False)
        return parse_wrk(load.stdout) if load.returncode == 0 else {"error": load.stderr[-200:]}
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        server.send_signal(signal.SIGQUIT)  # quick shutdown: no graceful wait for queued requests
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()


def run(ctx: Context) -> Section:
    connections, threads, duration, latency = ctx.pick((50, 10, 2, 0.2), (1000, 100, 6, 1.0),
                                                       (1000, 100, 15, 1.0))
    title = "6. A web app: gunicorn, one worker"
    if shutil.which("wrk") is None or not (APP / "app.py").exists():
        ctx.notes["gunicorn"] = "wrk or examples/gunicorn_app missing: figure 6 skipped"
        return Section(title, "Skipped: `wrk` (apt-get install wrk) or examples/gunicorn_app "
                       "is missing.", [], {})
    data: dict[str, list[dict[str, Any]]] = {key: [] for key in SETUPS}
    with simulator(latency=latency) as sim:
        ctx.log(f"gunicorn: {connections} wrk connections for {duration} s, calls of {latency:g} s")
        for number, setup in rounds(list(SETUPS), min(ctx.repeat, 2)):
            report = one_run(setup, sim.base_url, connections, threads, duration)
            report["peak_in_flight"] = sim.stats().get("peak_in_flight")
            sim.reset()
            data[setup].append(report)
            ctx.log(f"  gunicorn round {number + 1} {setup}: {report}")

    def values(setup: str, name: str) -> Samples:
        out = Samples()
        for report in data[setup]:
            out.add(report.get(name), report.get("error"))
        return out

    rows, series = [], {}
    for setup, label in SETUPS.items():
        ideal = (connections if setup == "gevent" else threads) / latency
        errors = sum(r.get("socket_errors", 0) + r.get("non_2xx", 0) for r in data[setup])
        series[setup] = (label, [values(setup, "rps")])
        rows.append([label, cell(values(setup, "rps"), "/s"), f"{ideal:,.0f}/s",
                     cell(values(setup, "p50"), " s"), cell(values(setup, "p99"), " s"),
                     ratio(values("gevent", "p50"), values(setup, "p50")),
                     cell(values(setup, "peak_in_flight")), str(errors)])
    png = plots.bars(ctx.out / "gunicorn.png", f"One gunicorn worker, {connections} clients, "
                     f"one {latency:g} s agent call per request", "requests/s", ["throughput"],
                     {f"gunicorn_{k}" if k == "gthread" else "ga_batch": v for k, v in series.items()})
    failures = [f"{k}: {r['error']}" for k, rs in data.items() for r in rs if "error" in r]
    markdown = "\n\n".join([
        f"`examples/gunicorn_app` (`GET /sentiment`: one agent call with structured output, "
        f"{latency:g} s simulator latency), one worker, `wrk -t1 -c{connections} -d{duration}s` "
        f"(closed loop); gthread with `--threads {threads}`. {min(ctx.repeat, 2)} alternating "
        "repetition(s), median (min–max). p50 ratio is greenagents ÷ this.",
        table(["server", "throughput", "ideal", "p50", "p99", "p50 ratio", "calls in flight (peak)",
               "errors"], rows),
        "![gunicorn throughput](gunicorn.png)",
        "**Reading.** With `-k gevent` the worker holds every client's call at once (the "
        "simulator's peak in flight), so throughput is bounded by the worker's one core (Flask, "
        "the agent call, JSON) rather than by latency; with `-k gthread` at most `--threads` "
        "calls wait at once and the other clients queue, which shows up as p50/p99 (percentiles "
        "of the requests that completed within the run).",
    ])
    return Section(title, markdown, [png], {"failures": failures})
