"""Figure 9 — batch cost: the same N agent calls online (``ga.batch``) and through the Batch API
(``ga.submit_batch``), against the simulator.

What it measures: wall time, HTTP requests the client made, tokens, and the price of those tokens
from greenagents' pricing table — list price online, batch price (half) through the Batch API —
for ``SentimentAgent`` (structured output) on ``gpt-4o-mini``, with the same tokens priced for
``claude-haiku-4-5`` too. Why: the Batch APIs trade latency for price and rate limits; this shows
the trade on identical work, and that batch results are the same Results (validated, in order).

The simulator answers online calls after ``L`` seconds each and ends a batch ``D`` seconds after
its creation. ``D`` stands in for the provider's queue, which in reality is minutes to hours
(within 24 h): the wall times compare the machinery, not what a real provider will take.
"""

from __future__ import annotations

import time
from typing import Any

from bench import harness
from bench.harness import Context, Samples, Section, cell, run_child, table

WIDTH = 200
MODELS = ("gpt-4o-mini", "claude-haiku-4-5")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run N calls one way (``spec["how"]``: online or batch); what it took and cost."""
    import tempfile

    from pydantic import BaseModel

    import greenagents as ga
    from bench.child import sim_call

    class Sentiment(BaseModel):
        label: str
        confidence: float

    class SentimentAgent(ga.Agent):
        model = "openai/gpt-4o-mini"
        instructions = "Classify the sentiment of the text."
        output = Sentiment
        base_url = spec["base_url"]

        def prompt(self, text: str) -> str:
            return text

    calls = [(SentimentAgent, {"text": f"review {i}: the product was fine"})
             for i in range(spec["n"])]
    sim_call(spec["base_url"], "/_sim/reset", "POST")
    started = time.perf_counter()
    if spec["how"] == "online":
        results = ga.batch(calls, max_concurrent=WIDTH)
    else:
        db = f"{tempfile.mkdtemp()}/runs.db"
        results = ga.submit_batch(calls, db=db, poll_interval=0.5,
                                  max_poll_interval=2.0).wait()
    wall = time.perf_counter() - started
    stats = sim_call(spec["base_url"], "/_sim/stats")
    usage = sum((r.usage for r in results if r.usage), ga.Usage())
    return {"wall": wall, "ok": sum(r.ok for r in results), "n": len(results),
            "in_order": [r.index for r in results] == list(range(len(results))),
            "requests": stats["requests"] + sum(stats["batches"].values()),
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "cost": sum(r.cost_usd or 0 for r in results)}


def run(ctx: Context) -> Section:
    from greenagents import pricing
    from greenagents.result import Usage

    n, latency, delay = ctx.pick((50, 0.05, 1.0), (2000, 0.5, 5.0), (10_000, 0.5, 10.0))
    ctx.log(f"batch cost: {n} calls online ({latency:g} s each, {WIDTH} wide) vs one batch "
            f"(ends {delay:g} s after creation)")
    data: dict[str, Samples] = {"online": Samples(), "batch": Samples()}
    reports: dict[str, dict[str, Any]] = {}
    with harness.simulator(latency=latency, batch_delay=delay) as sim:
        for _, how in harness.rounds(["online", "batch"], 1):
            report = run_child({"task": "batch_cost:child", "green": True, "how": how, "n": n,
                                "base_url": sim.base_url}, timeout=900)
            if "error" not in report and not (report["ok"] == n and report["in_order"]):
                report = {"error": f"{report['ok']}/{n} ok, in order: {report['in_order']}"}
            data[how].add(report.get("wall"), report.get("error"))
            reports[how] = report
            ctx.log(f"  {how}: {report.get('error') or round(report['wall'], 2)}")
    failures = [f"batch_cost {how}: {r['error']}" for how, r in reports.items() if "error" in r]
    rows = []
    for how in ("online", "batch"):
        report = reports[how]
        if "error" in report:
            rows.append([how, "–", "–", "–"] + ["–"] * len(MODELS))
            continue
        usage = Usage(report["prompt_tokens"], report["completion_tokens"])
        prices = [pricing.cost_usd(model, usage, batch=how == "batch") for model in MODELS]
        rows.append([how, cell(data[how], " s"), f"{report['requests']:,}",
                     f"{usage.total_tokens:,}"] + [f"${p:.4f}" if p is not None else "?"
                                                   for p in prices])
    markdown = "\n\n".join([
        f"{n:,} `SentimentAgent` calls (structured output), once online through `ga.batch` "
        f"({WIDTH} wide, {latency:g} s per call) and once through `ga.submit_batch(...).wait()` "
        f"(the simulator ends a batch {delay:g} s after creation, standing in for a provider's "
        "queue of minutes to hours). Requests: completions, uploads and batch creates the simulator "
        "saw (polls and downloads not counted). Price: "
        "those tokens at greenagents' pricing table, list price online, batch price (half) "
        "through the Batch API. One run each; timings on 2 shared cores are noisy.",
        table(["mode", "wall time", "requests", "tokens"] + [f"price {m}" for m in MODELS], rows),
        "**Reading.** The same Results, in the same order, for half the price: batch pays in "
        "latency (the provider's queue) what it saves in money and in rate-limit headroom (two "
        "requests instead of one per call).",
    ])
    return Section("11. Batch API cost", markdown, [], {"failures": failures})
