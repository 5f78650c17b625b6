"""Figure 1 — fan-out: N calls of 1 s latency, all N at once (N = C), for every contender.

What it measures: the wall time of the whole batch, and wall ÷ ideal (the ideal is one latency,
1 s, since every call can run at once). Anything above 1.0× is what the client stack costs:
CPU per call (on 2 cores shared with the simulator), connection set-up, scheduling. Why: this is
the question users ask — "how long do my 1,000 calls take?" — and the figure compares the
answer of every way they could write it, in one run, on one machine.

Threads are capped only where the OS refuses (a failed thread start is reported as a failure);
a run that exceeds the per-run time cap is reported as timed out and not repeated at that size.
Sequential ``requests`` runs only at N = 10 (at 1,000 it would take 17 minutes).
"""

from __future__ import annotations

from typing import Any

from bench import plots
from bench.clients import CONTENDERS
from bench.harness import Context, Section, cell, measure_calls, ratio, samples, simulator, table

LATENCY = 1.0
TAG = "fanout"
KEYS = ["ga_batch", "ga_each_openai", "green_urllib3", "asyncio_aiohttp", "asyncio_openai",
        "threads_requests", "threads_openai", "langchain", "litellm", "sequential"]
SEQUENTIAL_MAX = 10


def sizes(ctx: Context) -> list[int]:
    sized: list[int] = ctx.pick([5], [10, 100, 1000], [10, 100, 1000, 10_000])
    return sized


def cap_s(ctx: Context, n: int) -> float:
    """Per-run time cap (a child's imports and warm-up included)."""
    return float(ctx.pick(60, 120, 60 if n >= 10_000 else 150))


def sweep(ctx: Context, base_url: str, keys: list[str], points: list[int],
          latency: float = LATENCY) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Reports per size and contender (cached in ``ctx``; the memory figure reuses them)."""
    out: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for n in points:
        wanted = [k for k in keys if k != "sequential" or n <= SEQUENTIAL_MAX]
        ctx.log(f"fan-out: {n} calls of {latency:g} s, {n} wide")
        out[n] = measure_calls(ctx, base_url, wanted, n, n, tag=f"{TAG}@{latency:g}",
                               timeout=cap_s(ctx, n), extra={"warmup": 1})
    return out


def run(ctx: Context) -> Section:
    latency = 0.2 if ctx.smoke else LATENCY
    points = sizes(ctx)
    with simulator(latency=latency) as sim:
        data = sweep(ctx, sim.base_url, KEYS, points, latency)
    header = ["contender", *[f"N = C = {n:,}" for n in points]]
    walls, ratios, rows_ratio = [], [], []
    series_wall: dict[str, Any] = {}
    series_ideal: dict[str, Any] = {}
    for key in KEYS:
        if key in ctx.notes:
            continue
        label = CONTENDERS[key].label
        wall = {n: samples(data[n][key], lambda r: r["wall"]) for n in points if key in data[n]}
        ideal = {n: samples(data[n][key], lambda r, n=n: r["wall"] / latency)
                 for n in points if key in data[n]}
        series_wall[key], series_ideal[key] = (label, wall), (label, ideal)
        walls.append([label, *[cell(wall[n], " s") if n in wall else "–" for n in points]])
        ratios.append([label, *[cell(ideal[n], "×") if n in ideal else "–" for n in points]])
        ours = {n: samples(data[n]["ga_batch"], lambda r: r["wall"]) for n in points}
        rows_ratio.append([label, *[ratio(ours[n], wall[n]) if n in wall else "–" for n in points]])
    pngs = [
        plots.lines(ctx.out / "fanout_wall.png", f"Fan-out: N calls of {latency:g} s, all at once",
                    "N = concurrency (log)", "wall time, s (log)", series_wall, logy=True,
                    hline=latency),
        plots.lines(ctx.out / "fanout_ideal.png", "Fan-out: wall time ÷ ideal (one latency)",
                    "N = concurrency (log)", "wall ÷ ideal (log)", series_ideal, logy=True,
                    hline=1.0),
    ]
    markdown = "\n\n".join([
        f"N calls of {latency:g} s latency, all N in flight at once (N = C); "
        f"{ctx.repeat} alternating repetitions, each contender in a fresh process; "
        "median (min–max).",
        "**Wall time**\n\n" + table(header, walls),
        "**Wall ÷ ideal** (ideal = one latency)\n\n" + table(header, ratios),
        "**greenagents ÷ contender** (wall time; below 1.00× greenagents is faster)\n\n"
        + table(header, rows_ratio),
        "![fan-out wall time](fanout_wall.png)\n![fan-out wall/ideal](fanout_ideal.png)",
    ])
    return Section("1. Fan-out", markdown, pngs, {"latency": latency, "sizes": points})
