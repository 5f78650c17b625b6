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
from bench.harness import (
    Context,
    Section,
    cell,
    measure_calls,
    ratio,
    samples,
    simulator,
    standing,
    table,
)

LATENCY = 1.0
TAG = "fanout"
FLOOR, AIOHTTP = "green_geventhttpclient", "asyncio_aiohttp"  # issue #22's goals: ≤ 1.0×, ≤ 0.8×
#: The contenders whose server-side timeline is shown (the product, its floor, the asyncio best).
TIMELINE_KEYS = ["ga_batch", "ga_batch_gc", FLOOR, AIOHTTP, "green_urllib3"]
KEYS = ["ga_batch", "ga_batch_gc", "ga_each_openai", "green_urllib3", "green_geventhttpclient",
        "asyncio_aiohttp", "asyncio_openai", "threads_requests", "threads_openai", "langchain",
        "litellm", "sequential"]
SEQUENTIAL_MAX = 10


def sizes(ctx: Context) -> list[int]:
    sized: list[int] = ctx.sizes or ctx.pick([5], [10, 100, 1000], [10, 100, 1000, 10_000])
    return sized


def cap_s(ctx: Context, n: int) -> float:
    """Per-run time cap (a child's imports and warm-up included)."""
    return float(ctx.pick(60, 120, 60 if n >= 10_000 else 150))


def _plan(ctx: Context, keys: list[str], n: int, points: list[int],
          done: dict[int, dict[str, list[dict[str, Any]]]], latency: float) -> dict[str, int]:
    """Repetitions per contender at size ``n`` (0: not run, with a note in ``ctx.skipped``).

    Sequential only at N ≤ 10. The slow-to-import peers (LangChain, LiteLLM) only at N ≥ 100
    (quick: N = 100 only, which keeps quick under 3 minutes — LiteLLM alone takes 15–45 s at
    N = 1,000; smoke: always). Above 1,000 the budget goes where the answer is not known yet:
    a contender already at > 5× ideal at the previous size is not run again (at 10× the calls it
    can only be slower), one at 2.5–5× runs once.
    """
    plan: dict[str, int] = {}
    previous = max((p for p in points if p < n), default=None)
    for key in keys:
        runs = ctx.repeat
        if key == "sequential" and n > SEQUENTIAL_MAX:
            runs = 0
        elif CONTENDERS[key].venv or key == "langchain":
            wanted = {"smoke": True, "quick": n == 100, "full": n >= 100}[ctx.mode]
            runs = runs if wanted else 0
        if runs and previous is not None and n > 1000 and key in done.get(previous, {}):
            before = samples(done[previous][key], lambda r: r["wall"])
            slow = before.median / latency if before.ok else float("inf")
            if slow > 5:
                runs = 0
                ctx.skipped[(key, n)] = f"{slow:.1f}× ideal at N = {previous:,} already"
            elif slow > 2.5:
                runs = 1
        plan[key] = runs
    return plan


def sweep(ctx: Context, keys: list[str], points: list[int],
          latency: float = LATENCY) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Reports per size and contender, cached in ``ctx`` (the memory figure reuses them).

    Runs against a simulator of ``latency``, warming up against a zero-latency one; both start
    only if something is not cached yet. Who runs how often: :func:`_plan`.
    """
    tag = f"{TAG}@{latency:g}"
    out: dict[int, dict[str, list[dict[str, Any]]]] = {}
    cached = [(tag, k, n, n) in ctx.cache or (k, n) in ctx.skipped for n in points for k in keys]
    if all(cached):
        return {n: {k: ctx.cache[(tag, k, n, n)] for k in keys if (tag, k, n, n) in ctx.cache}
                for n in points}
    with simulator(latency=latency) as sim, simulator(latency=0.0) as warm:
        for n in points:
            plan = _plan(ctx, keys, n, points, out, latency)
            ctx.log(f"fan-out: {n} calls of {latency:g} s, {n} wide")
            out[n] = {}
            for runs in sorted(set(plan.values()) - {0}):
                group = [k for k, r in plan.items() if r == runs]
                out[n].update(measure_calls(
                    ctx, sim.base_url, group, n, n, tag=tag, timeout=cap_s(ctx, n),
                    repeat=runs, extra={"warmup": 1, "warmup_url": warm.base_url,
                                        "timeline": True}))
    return out


def reading(data: dict[int, dict[str, list[dict[str, Any]]]], points: list[int]) -> str:
    """Where ``ga.batch`` stands at each size, computed from the medians (lower is better)."""
    lines = []
    for n in points:
        ours = samples(data[n].get("ga_batch", []), lambda r: r["wall"])
        others = {CONTENDERS[k].label: samples(v, lambda r: r["wall"])
                  for k, v in data[n].items() if k != "ga_batch"}
        lines.append(f"N = {n:,}: {standing(ours, others, ' s')}.")
    return " ".join(lines) + (
        " Wall time above one latency is CPU work on the 2 cores the client shares with the "
        "simulator: every call's request building, connection set-up and response parsing in "
        "the client, accepting, reading and answering in the simulator (its CPU is in the "
        "timeline table: per request, about what the leanest client spends). At large N the "
        "slower of the two sets the pace (the timeline table shows which: in our runs the "
        "client for greenagents, the simulator for the bare floors); the SDK-based contenders "
        "(openai's client, LangChain, LiteLLM) and thread pools spend far more of it per call "
        "than raw clients and greenlets. Part of the client's CPU at 10,000 is CPython's cyclic "
        "GC (measured with `gc.callbacks`, 2026-11-30, load 4–15, one run each): 0.6–0.8 s of "
        "greenagents' 3.5–5.3 s, four fifths of it in 6 full collections that each visit every "
        "live object — about 46 GC-tracked objects per waiting agent call (56 before issue "
        "#22's per-call cuts), 31 per bare geventhttpclient request, whose run spent 0.3–0.4 s "
        "in the GC; aiohttp's 4 s of 9.5 s. greenagents leaves the GC's settings alone. A "
        "failed cell is a timeout or a refused thread start, shown as it happened.")


def goals(data: dict[int, dict[str, list[dict[str, Any]]]], n: int) -> str:
    """Issue #22's wall-time goals at ``n``, from the medians: greenagents ≤ 1.0× its own bare
    transport (bare greenlets over geventhttpclient) and ≤ 0.8× asyncio + aiohttp."""
    ours = samples(data[n].get("ga_batch", []), lambda r: r["wall"])
    parts = []
    for key, goal in ((FLOOR, 1.0), (AIOHTTP, 0.8)):
        theirs = samples(data[n].get(key, []), lambda r: r["wall"])
        parts.append(f"÷ {CONTENDERS[key].label}: **{ratio(ours, theirs)}** (goal ≤ {goal:.2f}×)")
    tuned = samples(data[n].get("ga_batch_gc", []), lambda r: r["wall"])
    floor = samples(data[n].get(FLOOR, []), lambda r: r["wall"])
    return f"**Issue #22's goals at N = {n:,}** (wall time, medians): greenagents " + \
        "; ".join(parts) + ". With the GC's threshold raised by the user (`gc.set_threshold(" \
        f"10_000)`, README): ÷ {CONTENDERS[FLOOR].label}: {ratio(tuned, floor)}."


def _median_run(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The repetition with the median wall time (one real run, not a mix of several)."""
    done = sorted((r for r in reports if "error" not in r and "timeline" in r),
                  key=lambda r: float(r["wall"]))
    return done[len(done) // 2] if done else None


def timelines(data: dict[int, dict[str, list[dict[str, Any]]]], n: int) -> str:
    """Where the wall time goes at ``n``: each run's client and simulator CPU, the connections
    it opened, the connections the kernel dropped for a full listen queue, and when (seconds
    into the run; 10th/50th/90th percentile) the simulator accepted them, read the requests and
    sent the answers."""
    header = ["contender (median run)", "load", "wall", "client CPU", "simulator CPU",
              "connections", "SYN drops", "accepted", "requests read", "answers sent",
              "answer − read (medians)"]
    rows = []
    for key in TIMELINE_KEYS:
        run = _median_run(data[n].get(key, []))
        if run is None:
            continue
        when = [" / ".join(f"{t:.1f}" for t in (q[1], q[2], q[3])) if (q := run["timeline"].get(e))
                else "–" for e in ("accepted", "arrived", "answered")]
        drops = run.get("listen_overflows")
        read, sent = run["timeline"].get("arrived"), run["timeline"].get("answered")
        lag = f"{sent[2] - read[2]:.1f} s" if read and sent else "–"
        rows.append([CONTENDERS[key].label, f"{run.get('load', 0):.1f}", f"{run['wall']:.1f} s",
                     f"{run['cpu']:.1f} s", f"{run['sim_cpu']:.1f} s", f"{run['connections']:,}",
                     "–" if drops is None else f"{drops:,}", *when, lag])
    if not rows:
        return ""
    return (f"**Where the time goes at N = {n:,}** (one run each, the median; times in seconds "
            "after the run began, 10th / 50th / 90th percentile; load: the machine's 1-minute "
            "load average when the run began, on 2 cores; SYN drops: connections the kernel "
            "refused for a full listen queue, machine-wide, each costing its client a 1 s "
            "retransmit). How to read it: requests read late with answers sent one latency after "
            "them means the client sets the pace (its CPU: building requests); answers sent well "
            "over one latency after the requests were read means the simulator does (it is "
            "behind: accepting, reading and answering cost it CPU too, on the same 2 cores); "
            "requests read long after their connections were accepted means the client opened "
            "every connection before sending any request.\n\n" + table(header, rows))


def run(ctx: Context) -> Section:
    latency = 0.2 if ctx.smoke else LATENCY
    points = sizes(ctx)
    data = sweep(ctx, KEYS, points, latency)
    header = ["contender", *[f"N = C = {n:,}" for n in points]]
    walls, ratios, rows_ratio, cpus = [], [], [], []
    series_wall: dict[str, Any] = {}
    series_ideal: dict[str, Any] = {}
    for key in KEYS:
        if key in ctx.notes:
            continue
        label = CONTENDERS[key].label
        wall = {n: samples(data[n][key], lambda r: r["wall"]) for n in points if key in data[n]}
        ideal = {n: samples(data[n][key], lambda r: float(r["wall"]) / latency)
                 for n in points if key in data[n]}
        series_wall[key], series_ideal[key] = (label, wall), (label, ideal)
        gap = {n: "not run" if (key, n) in ctx.skipped else "–" for n in points}
        walls.append([label, *[cell(wall[n], " s") if n in wall else gap[n] for n in points]])
        ratios.append([label, *[cell(ideal[n], "×") if n in ideal else "–" for n in points]])
        ours = {n: samples(data[n]["ga_batch"], lambda r: r["wall"]) for n in points}
        rows_ratio.append([label, *[ratio(ours[n], wall[n]) if n in wall else "–" for n in points]])
        cpu = {n: samples(data[n][key], lambda r: 1e6 * r["cpu"] / r["n"]) for n in points if key in data[n]}
        cpus.append([label, *[cell(cpu[n], " µs") if n in cpu else "–" for n in points]])
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
        *(["Not run (the time went where the answer was still open): " + "; ".join(
            f"{CONTENDERS[k].label} at N = {n:,} ({why})" for (k, n), why in ctx.skipped.items())
           + "."] if ctx.skipped else []),
        "**Wall ÷ ideal** (ideal = one latency)\n\n" + table(header, ratios),
        "**greenagents ÷ contender** (wall time; below 1.00× greenagents is faster)\n\n"
        + table(header, rows_ratio),
        "**Client CPU per call** (`process_time` of the client process ÷ N)\n\n" + table(header, cpus),
        goals(data, points[-1]),
        timelines(data, points[-1]),
        "![fan-out wall time](fanout_wall.png)\n![fan-out wall/ideal](fanout_ideal.png)",
        "**Reading.** " + reading(data, points),
    ])
    return Section("1. Fan-out", markdown, pngs, {"latency": latency, "sizes": points})
