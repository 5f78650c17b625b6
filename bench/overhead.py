"""Figure 3 — overhead: client CPU time per call against a zero-latency simulator.

What it measures: ``time.process_time()`` of the client process only (all its threads; the
simulator is another process) over N calls W wide, divided by N — the CPU one call costs the
caller. With zero latency nothing hides that cost. Contenders, from the floor up:

* raw ``urllib3`` in bare greenlets (the floor greenagents' own HTTP path can reach) and raw
  ``aiohttp`` (the fastest asyncio client);
* ``ga.each`` over the same raw urllib3 function (what the runtime adds: Result, slot, contexts);
* raw urllib3 and aiohttp doing the agent's job by hand — the same structured request, the answer validated
  by the same pydantic model — the fair floor for an Agent (the plain-text floor sends less and
  validates nothing);
* ``ga.batch`` over an ``Agent`` with structured output (the product: input validation, messages,
  retry policy, JSON schema, pydantic validation of the answer, usage and cost), tracking off and
  on (the SQLite execution log, flushed inside the measured time).

Then one more, untimed ``ga.batch`` run under pyinstrument ranks greenagents' own functions by
self time, so the owner of the code knows where the CPU goes.
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
    run_child,
    samples,
    simulator,
    table,
)

KEYS = ["ga_batch", "ga_batch_tracked", "ga_batch_otel", "ga_each_urllib3", "green_urllib3_structured",
        "green_urllib3", "green_geventhttpclient", "asyncio_aiohttp", "asyncio_aiohttp_structured"]
FLOOR = "green_urllib3"
GOAL = 1.3


def us_per_call(report: dict[str, Any]) -> float:
    return 1e6 * float(report["cpu"]) / float(report["n"])


def _hotspot_table(profile: dict[str, Any]) -> str:
    rows = [[f"`{name}`", f"{pct:.1f}%"] for name, pct in profile.get("self", [])]
    owned = [[f"`{name}`", f"{pct:.1f}%"] for name, pct in profile.get("attributed", [])]
    return "\n\n".join([
        f"greenagents' own code holds {profile.get('own_code_self_pct', 0):.1f}% of the sampled "
        "time as *self* time (the rest is urllib3, http.client, json, pydantic-core, gevent "
        "and the interpreter). Top functions by self time:",
        table(["greenagents function (self)", "% of samples"], rows),
        "By attributed time (self time plus the library code it calls directly — urllib3 under "
        "`post_json`, pydantic under `parse`; these and the 'outside' row sum to 100%):",
        table(["greenagents function (attributed)", "% of samples"], owned),
    ])


def run(ctx: Context) -> Section:
    n, width = ctx.pick((100, 10), (1000, 50), (2000, 50))
    with simulator(latency=0.0) as sim:
        ctx.log(f"overhead: {n} calls, {width} wide, zero latency")
        data = measure_calls(ctx, sim.base_url, KEYS, n, width, tag="overhead", timeout=120,
                             extra={"warmup": 20})
        ctx.log("overhead: profiling ga.batch(Agent) with pyinstrument")
        profiled = run_child({"task": "calls", "contender": "ga_batch", "green": True,
                              "base_url": sim.base_url, "n": n, "width": width, "warmup": 20,
                              "profile": True}, timeout=180)
    floor = samples(data[FLOOR], us_per_call)
    rows, series = [], {}
    for key in KEYS:
        cpu = samples(data[key], us_per_call)
        wall = samples(data[key], lambda r: r["n"] / r["wall"])
        series[key] = (CONTENDERS[key].label, [cpu])
        rows.append([CONTENDERS[key].label, cell(cpu, " µs"), ratio(cpu, floor), cell(wall, "/s")])
    ours = samples(data["ga_batch"], us_per_call)
    png = plots.bars(ctx.out / "overhead_cpu.png", f"Client CPU per call ({n:,} calls, {width} wide,"
                     " zero latency)", "µs of client CPU per call", ["CPU per call"], series,
                     goal=GOAL * floor.median if floor.ok else None,
                     goal_label=f"goal: {GOAL}× raw urllib3")
    profile = profiled.get("profile") or {}
    failures = [f"profile: {profiled['error']}"] if "error" in profiled else []
    markdown = "\n\n".join([
        f"{n:,} calls, {width} wide, against a zero-latency simulator; client process CPU "
        f"(`time.process_time()`, all threads) ÷ calls; {ctx.repeat} alternating repetition(s), "
        "median (min–max). The ratio is **this ÷ raw urllib3 in bare greenlets** (the floor); "
        f"goal for `ga.batch(Agent)`: ≤ {GOAL}×. Calls/s is throughput with the simulator "
        "sharing the 2 cores.",
        table(["contender", "CPU per call", "÷ raw urllib3", "calls/s"], rows),
        f"**greenagents ga.batch(Agent) ÷ raw urllib3: {ratio(ours, floor)}**; ÷ the same "
        "structured job by hand: "
        f"{ratio(ours, samples(data['green_urllib3_structured'], us_per_call))}; "
        f"÷ aiohttp: {ratio(ours, samples(data['asyncio_aiohttp'], us_per_call))}; "
        "**÷ aiohttp doing the same structured job by hand: "
        f"{ratio(ours, samples(data['asyncio_aiohttp_structured'], us_per_call))}** "
        "(goal: ≤ 1.00×); "
        f"÷ ga.each + raw urllib3: {ratio(ours, samples(data['ga_each_urllib3'], us_per_call))} "
        "(what the Agent layer costs on top of the runtime). The runtime alone (`ga.each` over "
        "raw urllib3) costs about what bare greenlets do; the Agent layer — input validation, "
        "request building, the retry policy, structured-output parsing, usage, cost, Result "
        "— is the difference, part of which (a bigger request, the pydantic validation) any "
        "code asking for structured output pays, as the by-hand row shows; tracking adds the "
        "SQLite writes (in gevent's thread pool).",
        "![client CPU per call](overhead_cpu.png)",
        "**Profile** (pyinstrument, one untimed `ga.batch(Agent)` run of the same size):\n\n"
        + (_hotspot_table(profile) if profile else f"not available: {profiled.get('error')}"),
    ])
    return Section("3. Overhead: CPU per call", markdown, [png],
                   {"profile": profile, "failures": failures})
