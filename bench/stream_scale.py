"""Figure 5 — stream scale: ``ga.stream`` over a generator of up to 1,000,000 calls.

What it measures: peak RSS of the process (``VmHWM``, reset after imports and a warm-up) as the
results of N trivial calls (a cheap Python function, no HTTP) are consumed, at N = 10k, 100k
and 1M in one run, plus calls per second. Why: ``ga.stream`` promises to consume its input
lazily — memory O(max_concurrent), not O(N) — so a million-line job runs in a small, flat
footprint; this checks the promise and what each call costs the runtime alone.

For contrast, ``ThreadPoolExecutor.map`` over the same generator (it submits every item up
front, so it holds N futures), in an unpatched child, up to 100k.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

from bench import harness, plots
from bench.harness import Context, Samples, Section, cell, run_child, table

WIDTH = 100
CONTENDERS = {"ga_stream": "greenagents ga.stream (generator)",
              "threads_map": "ThreadPoolExecutor.map (generator)"}
THREADS_MAX = 100_000


def work(i: int) -> int:
    """The trivial call: a little arithmetic, no I/O."""
    return i * 2 + 1


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Consume ``max(checkpoints)`` results; RSS and elapsed time at each checkpoint."""
    checkpoints = sorted(spec["checkpoints"])

    def calls(n: int) -> Iterator[Any]:
        return ((work, (i,), {}) for i in range(n))

    if spec["contender"] == "ga_stream":
        import greenagents as ga

        def consume(n: int) -> Iterator[Any]:
            return ga.stream(calls(n), max_concurrent=WIDTH)
    else:
        from concurrent.futures import ThreadPoolExecutor

        executor = ThreadPoolExecutor(WIDTH)

        def consume(n: int) -> Iterator[Any]:
            return executor.map(work, range(n))

    for _ in consume(1000):  # warm-up: imports, first greenlets/threads
        pass
    base, points = harness.rss_kb(), cast(list[dict[str, Any]], [])
    # ga.stream: one run, peak so far at each checkpoint (an upper bound for smaller N). The
    # executor submits everything up front, so each N gets its own run.
    runs = [checkpoints[-1]] if spec["contender"] == "ga_stream" else checkpoints
    for total in runs:
        harness.reset_peak_rss()
        started = time.perf_counter()
        for seen, _ in enumerate(consume(total), 1):
            if len(points) < len(checkpoints) and seen == checkpoints[len(points)]:
                points.append({"n": seen, "peak_kb": harness.peak_rss_kb(),
                               "elapsed": time.perf_counter() - started})
    return {"rss_base_kb": base, "points": points}


def run(ctx: Context) -> Section:
    checkpoints = ctx.pick([1000, 10_000], [10_000, 100_000], [10_000, 100_000, 1_000_000])
    data: dict[str, list[dict[str, Any]]] = {key: [] for key in CONTENDERS}
    for number, key in harness.rounds(list(CONTENDERS), 1):  # 1M calls: one run is enough
        points = [c for c in checkpoints if key == "ga_stream" or c <= THREADS_MAX]
        report = run_child({"task": "stream_scale:child", "contender": key,
                            "green": key == "ga_stream", "checkpoints": points}, timeout=600)
        data[key].append(report)
        ctx.log(f"  stream round {number + 1} {key}: "
                + str(report.get("error") or [(p["n"], p["peak_kb"]) for p in report["points"]]))

    def at(key: str, n: int, value: str) -> Samples:
        out = Samples()
        for report in data[key]:
            if "error" in report:
                out.add(None, report["error"])
                continue
            point = next((p for p in report["points"] if p["n"] == n), None)
            if point is not None:
                growth = float(point["peak_kb"] - report["rss_base_kb"])
                out.add(growth if value == "growth" else point["peak_kb"] / 1024 if value == "peak"
                        else n / point["elapsed"])
        return out

    rows, series = [], {}
    for key, label in CONTENDERS.items():
        series[key] = (label, {n: at(key, n, "peak") for n in checkpoints if at(key, n, "peak").ok})
        for n in checkpoints:
            rows.append([label, f"{n:,}", cell(at(key, n, "peak"), " MB"),
                         cell(at(key, n, "growth"), " KB"), cell(at(key, n, "rate"), "/s")])
    png = plots.lines(ctx.out / "stream_rss.png", "Peak RSS while consuming N results",
                      "N calls consumed (log)", "peak RSS, MB", series)
    failures = [f"{k}: {r['error']}" for k, rs in data.items() for r in rs if "error" in r]
    markdown = "\n\n".join([
        f"A generator of N trivial calls (`work(i)`, no I/O) through `ga.stream(..., "
        f"max_concurrent={WIDTH})`, results consumed one by one; peak RSS of the process at each "
        f"checkpoint of one run, growth over the RSS after a warm-up, and calls per second. "
        f"ThreadPoolExecutor.map only up to {THREADS_MAX:,} (it holds every future). "
        "One run (its checkpoints are the repetition).",
        table(["consumer", "N consumed", "peak RSS", "growth over baseline", "calls/s"], rows),
        "![stream peak RSS](stream_rss.png)",
        "**Reading.** `ga.stream` holds at most 2 × max_concurrent calls started ahead, so its "
        "peak RSS stays at the warm-up level whatever N; `ThreadPoolExecutor.map` submits the "
        "whole generator before yielding a result, so it grows with N. Per trivial call, "
        "greenagents' runtime (a greenlet, a context copy, a slot and a Result each) is slower "
        "than an executor's future: this figure is about memory, the overhead figure about CPU.",
    ])
    return Section("5. Stream scale", markdown, [png], {"failures": failures})
