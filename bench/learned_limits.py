"""Figure 14 — learned limits: N calls against a provider limited to R requests a minute, with no
limit configured.

What it measures: the 429s the simulator answered and the wall time of N ``ga.batch(Agent)``
calls, W wide, against a simulator allowing R requests per minute per key (a sliding window,
stated on every answer in OpenAI's ``x-ratelimit-*`` headers), three ways: nothing configured and
learning off (what a client that ignores the headers does: ask, get 429, wait the Retry-After);
nothing configured and the headers learned (the default); and the exact limit configured
(``ga.rate_limit("openai", rpm=R)``, learning off). Why: users rarely know their tier; the goal
(#18) is ≤ 2 % of requests answered 429 and a wall time within 10 % of the exact-limit run.

Every contender retries up to 10 times so all calls finish and the walls compare; with N = 2R the
ideal is one window (60 s) plus the answers' latency. ``--smoke`` shortens the simulator's window
to 2 s (the configured row then sets the same average rate per minute, which is burstier than the
window): it exercises the code, its numbers mean little.
"""

from __future__ import annotations

import time
from typing import Any

from bench import harness
from bench.harness import Context, Samples, Section, cell, run_child, table

HOW = {"none": "no limit, headers ignored", "learned": "no limit, headers learned (default)",
       "configured": "exact limit configured (rpm=R)"}
GOAL_429 = 0.02
GOAL_WALL = 1.10


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run N calls one way (``spec["how"]``); the wall time and what the simulator answered."""
    import greenagents as ga
    from bench.child import sim_call

    class BenchAgent(ga.Agent):
        model = "openai/gpt-4o-mini"
        instructions = "Classify the sentiment of the text."
        base_url = spec["base_url"]
        retries = ga.Retry(max=10)

    ga.configure(learn_rate_limits=spec["how"] == "learned", retry_after_max=120)
    if spec["how"] == "configured":
        ga.rate_limit("openai", rpm=round(spec["rpm"] * 60 / spec["window"]))
    calls = [(BenchAgent, {"input": f"review {i}"}) for i in range(spec["n"])]
    sim_call(spec["base_url"], "/_sim/reset", "POST")
    started = time.perf_counter()
    results = ga.batch(calls, max_concurrent=spec["width"], warn_failures=False)
    wall = time.perf_counter() - started
    statuses = sim_call(spec["base_url"], "/_sim/stats")["by_status"]
    return {"wall": wall, "ok": sum(r.ok for r in results), "n": len(results),
            "limited": int(statuses.get("429", 0)), "requests": sum(statuses.values())}


def run(ctx: Context) -> Section:
    n, rpm, width, latency, window = ctx.pick((24, 10, 10, 0.05, 2.0), (400, 200, 100, 0.2, 60.0),
                                              (2000, 1000, 200, 0.5, 60.0))
    ctx.log(f"learned limits: {n} calls of {latency:g} s, {width} wide, against {rpm} requests "
            f"per {window:g} s, no limit configured")
    walls = {how: Samples() for how in HOW}
    reports: dict[str, list[dict[str, Any]]] = {how: [] for how in HOW}
    with harness.simulator(latency=latency, rpm=rpm, rate_window=window) as sim:
        for _, how in harness.rounds(list(HOW), 1):  # each run takes at least a window
            report = run_child({"task": "learned_limits:child", "green": True, "how": how, "n": n,
                                "rpm": rpm, "window": window, "width": width,
                                "base_url": sim.base_url}, timeout=30 * window + 120)
            if "error" not in report and report["ok"] != n:
                report = {"error": f"only {report['ok']}/{n} calls succeeded"}
            walls[how].add(report.get("wall"), report.get("error"))
            reports[how].append(report)
            ctx.log(f"  {how}: {report.get('error') or report}")
    failures = [f"learned_limits {how}: {r['error']}" for how, rs in reports.items() for r in rs
                if "error" in r]
    rows = []
    for how, label in HOW.items():
        done = [r for r in reports[how] if "error" not in r]
        limited = Samples([r["limited"] for r in done])
        share = Samples([r["limited"] / r["requests"] for r in done])
        rows.append([label, cell(walls[how], " s"), cell(limited),
                     f"{share.median:.1%}" if share.ok else "–"])
    learned, exact = walls["learned"], walls["configured"]
    verdict = (f"learned ÷ exact-limit wall: **{learned.median / exact.median:.2f}×** (goal ≤ "
               f"{GOAL_WALL:.2f}×)" if learned.ok and exact.ok else "learned or exact run failed")
    markdown = "\n\n".join([
        f"{n:,} `ga.batch(Agent)` calls of {latency:g} s, {width} wide, against a simulator "
        f"allowing {rpm:,} requests per {window:g} s per key (a sliding window stated in "
        "`x-ratelimit-*` headers on every answer); every contender retries up to 10 times. "
        "`429s`: what the simulator answered; share: of all requests it saw. One run each "
        "(each takes at least a window); timings on 2 shared cores are noisy.",
        table(["contender", "wall time", "429s", "share of requests"], rows),
        f"{verdict}; goal for 429s: ≤ {GOAL_429:.0%} of requests.",
        "**Reading.** Ignoring the headers, every call past the budget is answered 429 at least "
        "once and waits its Retry-After, and the retries that arrive together as the window frees "
        "meet more 429s. Learning them, calls stop when the stated remaining budget is spent, "
        "wait without their slot until the stated reset, then go at the stated limit; the few "
        "429s left come at the end of a window, where the latest answer's count was a little "
        "optimistic (requests sent together reach the provider in another order). The exact "
        "configured limit is the `limits` library's sliding-window counter: it spreads the "
        "second window's calls over that window instead of sending them when the provider's "
        "window frees, and, being approximate, lets through some that the provider's exact "
        "window refuses.",
    ])
    return Section("14. Learned rate limits", markdown, [], {"failures": failures})
