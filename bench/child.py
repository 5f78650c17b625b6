"""One benchmark child process: ``python -m bench.child '<json spec>'``; prints one JSON report.

The spec says whether the child is green; if so, the very first thing it does is
``import greenagents.monkey``, before any HTTP client (or ``ssl``) is imported, as a user's
program would. Then it runs one task:

* ``calls``: build one contender (:mod:`bench.clients`), warm it up (against a zero-latency
  simulator when ``warmup_url`` is given: imports and code paths, not a second of waiting; the
  timed client's own connection pool then starts cold), then time N calls W wide —
  wall time, process CPU time, RSS before and peak RSS during the run, and what the simulator saw
  (peak requests in flight, statuses). Optionally profiled with pyinstrument.
* any other task names a ``module:function`` in ``bench`` taking the spec and returning a report
  (the stream-scale and load-generator children).
"""

# ruff: noqa: E402  # the imports below the patch come after it on purpose
from __future__ import annotations

import json
import sys
from typing import Any

SPEC: dict[str, Any] = json.loads(sys.argv[1]) if __name__ == "__main__" else {}
if SPEC.get("green"):
    import greenagents.monkey  # noqa: F401  # first: patch before anything imports ssl/socket

# isort: split

import gc
import importlib
import os
import time
import urllib.request

from bench import harness


def sim_call(base_url: str, path: str, method: str = "GET") -> dict[str, Any]:
    """The simulator's control endpoints (``/_sim/stats``, ``/_sim/reset``)."""
    root = base_url.removesuffix("/v1")
    request = urllib.request.Request(root + path, method=method,
                                     data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def measure_calls(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm a contender up, then measure ``n`` calls ``width`` wide (see the module docstring)."""
    from bench.clients import CONTENDERS, Options

    contender = CONTENDERS[spec["contender"]]
    opts = Options(base_url=spec["base_url"], width=spec["width"])
    warmup, warm_url = spec.get("warmup", 1), spec.get("warmup_url")
    if warmup and warm_url:  # a zero-latency simulator: same code paths, no second of waiting
        contender.build(Options(base_url=warm_url, width=opts.width))(range(-warmup, 0))
    run = contender.build(opts)
    if warmup and not warm_url:
        run(range(-warmup, 0))  # negative indices: bodies the timed run never sends
    sim_call(opts.base_url, "/_sim/reset", "POST")
    gc.collect()
    harness.reset_peak_rss()
    base = harness.rss_kb()
    profiler = _profiler() if spec.get("profile") else None
    overflows, load = listen_overflows(), os.getloadavg()[0]
    started = time.monotonic()  # the simulator's timeline is on this (machine-wide) clock
    cpu, wall = time.process_time(), time.perf_counter()
    ok = run(range(spec["n"]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ended = time.monotonic()
    report: dict[str, Any] = {"wall": wall, "cpu": cpu, "ok": ok, "n": spec["n"],
                              "rss_base_kb": base, "rss_peak_kb": harness.peak_rss_kb(),
                              "load": load}
    if profiler is not None:
        profiler.stop()
        report["profile"] = _hotspots(profiler, spec.get("profile_prefix", "greenagents/"))
    if spec.get("timeline"):
        moments = sim_call(opts.base_url, "/_sim/timeline")
        report["sim_cpu"] = moments.pop("cpu_s")
        report["timeline"] = timeline(moments, started, ended)
        report["connections"] = sum(started <= t <= ended for t in moments["accepted"])
        after = listen_overflows()
        report["listen_overflows"] = None if after is None or overflows is None else after - overflows
    stats = sim_call(opts.base_url, "/_sim/stats")
    report["peak_in_flight"] = stats.get("peak_in_flight")
    report["by_status"] = stats.get("by_status")
    return report


#: The quantiles of each timeline event reported (0: the first, 1: the last).
QUANTILES = (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)


def timeline(moments: dict[str, list[float]], started: float,
             ended: float) -> dict[str, list[float]]:
    """When, in seconds after the timed run began, the simulator accepted connections, read
    requests and sent answers: each event's :data:`QUANTILES` (e.g. ``accepted[2]`` is when half
    the connections were accepted); moments outside the run (its control calls) are left out.
    What separates a server that accepts late from a client that connects late from a client
    that reads its answers late."""
    out: dict[str, list[float]] = {}
    for event, times in moments.items():
        ordered = sorted(t - started for t in times if started <= t <= ended)
        if ordered:
            last = len(ordered) - 1
            out[event] = [round(ordered[round(q * last)], 3) for q in QUANTILES]
    return out


def listen_overflows() -> int | None:
    """The machine's count of connections dropped because a listen queue was full (Linux's
    ``ListenOverflows``: each costs its client a SYN retransmit, 1 s then 3 s), None where
    unknown. Machine-wide: another program's overflows count too."""
    try:
        with open("/proc/net/netstat") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and "ListenOverflows" in names.split():
            return int(values.split()[names.split().index("ListenOverflows")])
    return None


def _profiler() -> Any:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    return profiler


def _hotspots(profiler: Any, prefix: str, top: int = 12) -> dict[str, Any]:
    """Where the samples went, per ``file:function`` under ``prefix``, as % of all samples.

    ``self``: time in the function's own lines. ``attributed``: its self time plus the time of
    every library function it called directly (not through another ``prefix`` function) — so
    ``http.py:post_json`` owns the urllib3 work it triggers and ``structured.py:parse`` the
    pydantic validation; the attributed times of all functions plus "outside" sum to 100%.
    """
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return {"total_s": 0.0, "self": [], "attributed": []}
    self_time: dict[str, float] = {}
    attributed: dict[str, float] = {}

    def walk(frame: Any, owner: str, parent: str | None) -> None:
        # pyinstrument puts a frame's own lines in a synthetic "[self]" child
        if getattr(frame, "is_synthetic", False) and not frame.children:
            if parent is not None and frame.identifier.startswith("[self]"):
                self_time[parent] = self_time.get(parent, 0.0) + frame.time
            attributed[owner] = attributed.get(owner, 0.0) + frame.time
            return
        path = (frame.file_path or "").replace("\\", "/")
        mine = None
        if prefix in path:
            owner = mine = f"{path[path.rfind(prefix):]}:{frame.function}"
        own = max(0.0, frame.time - sum(child.time for child in frame.children))
        if mine is not None:
            self_time[mine] = self_time.get(mine, 0.0) + own
        attributed[owner] = attributed.get(owner, 0.0) + own
        for child in frame.children:
            walk(child, owner, mine)

    walk(root, "(outside greenagents: hub, event loop, runner)", None)
    total = root.time or 1.0

    def ranked(times: dict[str, float]) -> list[list[Any]]:
        best = sorted(times.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [[key, round(100 * value / total, 2)] for key, value in best]

    return {"total_s": total, "self": ranked(self_time), "attributed": ranked(attributed),
            "own_code_self_pct": round(100 * sum(self_time.values()) / total, 2)}


def main() -> None:
    harness.raise_nofile()
    task = SPEC.get("task", "calls")
    if task == "calls":
        report = measure_calls(SPEC)
    else:
        module, _, function = task.partition(":")
        report = getattr(importlib.import_module(f"bench.{module}"), function)(SPEC)
    harness.emit(report)


if __name__ == "__main__":
    main()
