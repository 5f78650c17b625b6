"""Figure 8 — tool-using agents: N agents at once, each model → 3 tool calls → model.

What it measures: the wall time of N tool-using agents started together, each one model turn of
L seconds that asks for three tools, the three tool calls (one blocking HTTP request each to a
local tool server answering after T seconds), then a second model turn of L seconds. Ideal:
2·L + T (2.5 s at L = 1, T = 0.5). Why: a tool is ordinary blocking code; after patching, one
agent's three calls and every agent's calls wait on the network together, with no async rewrite.
The tool server counts its requests in flight: the peak shows how many tool calls really overlapped.

Contenders: greenagents (``ga.batch`` of the agent, ``tool_concurrency`` 8); the same agent with
``tool_concurrency = 1`` (tools one after another in each agent: ideal 2·L + 3·T); the same sync
agent code in an unpatched ``ThreadPoolExecutor`` of N threads (its tool calls then run in
threads too, greenagents' fallback); and pydantic-ai on asyncio (async tools on ``httpx``), a peer
with parallel tool calls, at 100 and N agents.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Literal

from bench import plots
from bench.harness import Context, Samples, Section, cell, rounds, run_child, samples, simulator, table

GOAL = 1.2
CONTENDERS = {
    "ga": "greenagents ga.batch, tools in greenlets",
    "ga_sequential": "greenagents, tool_concurrency=1 (tools one by one)",
    "threads": "ThreadPoolExecutor(N), same sync agent code, unpatched",
    "pydantic_ai": "pydantic-ai on asyncio (async tools on httpx)",
}
GREEN = {"ga": True, "ga_sequential": True, "threads": False, "pydantic_ai": False}
TOOLS = 3


def _get(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, method="GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def _post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30).close()


# ------------------------------------------------------------------ child side

def _sync_agent(url: str, tools_url: str, width: int, concurrency: int) -> Any:
    """The agent every sync contender runs: three tools, each one ``requests`` call."""
    import requests

    import greenagents as ga

    session = requests.Session()
    # requests scans os.environ for proxy settings on every request (~1 ms of CPU, the largest
    # cost of a call here); a program making thousands of local calls turns that off.
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=width * TOOLS))

    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        """Current weather for a city."""
        return session.get(f"{tools_url}/weather/{city}", params={"unit": unit}, timeout=30).text

    def search_flights(origin: str, destination: str) -> str:
        """Flights between two cities."""
        return session.get(f"{tools_url}/flights", params={"from": origin, "to": destination},
                           timeout=30).text

    def find_hotels(city: str, nights: int = 1) -> str:
        """Hotels in a city."""
        return session.get(f"{tools_url}/hotels", params={"city": city, "nights": str(nights)},
                           timeout=30).text

    class TravelAgent(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = url
        instructions = "Plan a trip."
        tools = (get_weather, search_flights, find_hotels)
        tool_concurrency = concurrency
        tool_timeout = 60.0
        timeout = 60.0

    return TravelAgent


def _run_sync(spec: dict[str, Any], base_url: str, n: int, width: int) -> int:
    agent = _sync_agent(base_url, spec["tools_url"], width, 1 if spec["contender"] ==
                        "ga_sequential" else 8)
    calls = [f"trip {i}" for i in range(n)]
    if spec["contender"] == "threads":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(width) as pool:
            return sum(r.ok for r in pool.map(agent.call, calls))
    import greenagents as ga

    return sum(r.ok for r in ga.batch([(agent, (c,), {}) for c in calls], max_concurrent=width))


def _run_pydantic_ai(spec: dict[str, Any], base_url: str, n: int, width: int) -> int:
    import asyncio

    import httpx
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    tools_url = spec["tools_url"]

    async def main() -> int:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=width * TOOLS)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client, \
                httpx.AsyncClient(limits=limits, timeout=60) as model_client:
            provider = OpenAIProvider(base_url=base_url, api_key="sk-bench", http_client=model_client)
            agent = Agent(OpenAIChatModel("gpt-4o-mini", provider=provider),
                          instructions="Plan a trip.")

            @agent.tool_plain
            async def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
                """Current weather for a city."""
                return (await client.get(f"{tools_url}/weather/{city}", params={"unit": unit})).text

            @agent.tool_plain
            async def search_flights(origin: str, destination: str) -> str:
                """Flights between two cities."""
                params = {"from": origin, "to": destination}
                return (await client.get(f"{tools_url}/flights", params=params)).text

            @agent.tool_plain
            async def find_hotels(city: str, nights: int = 1) -> str:
                """Hotels in a city."""
                params = {"city": city, "nights": str(nights)}
                return (await client.get(f"{tools_url}/hotels", params=params)).text

            bound = asyncio.Semaphore(width)

            async def one(i: int) -> bool:
                async with bound:
                    await agent.run(f"trip {i}")
                    return True

            done = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
            errors = [d for d in done if isinstance(d, BaseException)]
            if errors and len(errors) == n:
                raise errors[0]
            return sum(d is True for d in done)

    return asyncio.run(main())


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up (zero latencies), then time ``n`` agents ``width`` wide; the tool server's peak."""
    from bench import harness

    runner: Callable[[dict[str, Any], str, int, int], int] = (
        _run_pydantic_ai if spec["contender"] == "pydantic_ai" else _run_sync)
    runner({**spec, "tools_url": spec["warm_tools_url"]}, spec["warm_url"], 2, 2)
    _post(spec["tools_url"] + "/_tools/reset")
    harness.reset_peak_rss()
    cpu, wall = time.process_time(), time.perf_counter()
    ok = runner(spec, spec["base_url"], spec["n"], spec["n"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tools = _get(spec["tools_url"] + "/_tools/stats")
    return {"wall": wall, "cpu": cpu, "ok": ok, "n": spec["n"], "rss_peak_kb": harness.peak_rss_kb(),
            "tool_peak": tools["peak"], "tool_requests": tools["requests"]}


# ------------------------------------------------------------------ parent side

def _points(ctx: Context, n: int) -> list[tuple[str, int]]:
    peer_sizes = sorted({min(100, n), n})
    return [("ga", n), ("ga_sequential", n), ("threads", n)] + \
        [("pydantic_ai", size) for size in peer_sizes]


def _usable(ctx: Context, key: str) -> bool:
    if key != "pydantic_ai":
        return True
    try:
        import pydantic_ai  # noqa: F401
    except ImportError:
        ctx.notes[key] = "`pydantic-ai-slim[openai]` is not installed (pip install -e \".[bench]\")"
        return False
    return True


def run(ctx: Context) -> Section:
    n, latency, tool_latency = ctx.pick((20, 0.2, 0.1), (1000, 1.0, 0.5), (1000, 1.0, 0.5))
    ideal = 2 * latency + tool_latency
    from greenagents.testing import ToolServer

    points = [p for p in _points(ctx, n) if _usable(ctx, p[0])]
    reports: dict[tuple[str, int], list[dict[str, Any]]] = {p: [] for p in points}
    with simulator(latency=latency) as sim, simulator(latency=0.0) as warm, \
            ToolServer(latency=tool_latency).start_process() as tools, \
            ToolServer(latency=0.0).start_process() as warm_tools:
        ctx.log(f"tools: {n} agents, model {latency:g} s → {TOOLS} tools of {tool_latency:g} s "
                f"→ model {latency:g} s (ideal {ideal:g} s)")
        labels = [f"{key}@{size}" for key, size in points]
        for number, label in rounds(labels, ctx.repeat):
            key, size = label.split("@")[0], int(label.split("@")[1])
            spec = {"task": "tools:child", "contender": key, "green": GREEN[key], "n": size,
                    "base_url": sim.base_url, "warm_url": warm.base_url,
                    "tools_url": tools.url, "warm_tools_url": warm_tools.url}
            report = run_child(spec, timeout=600)
            reports[(key, size)].append(report)
            summary = report.get("error") or (f"wall {report['wall']:.2f}s cpu {report['cpu']:.2f}s"
                                              f" ok {report['ok']}/{size} tool peak "
                                              f"{report['tool_peak']}")
            ctx.log(f"  tools n={size} round {number + 1}/{ctx.repeat} {key}: {summary}")
    return _section(ctx, n, latency, tool_latency, points, reports)


def _cpu_note(cpu_ms: dict[tuple[str, int], Samples], n: int) -> str:
    """"greenagents X ms, the thread pool Y ms, pydantic-ai Z ms" of CPU per agent, at ``n``."""
    names = {"ga": "greenagents", "threads": "the thread pool", "pydantic_ai": "pydantic-ai"}
    parts = [f"{name} {cpu_ms[(key, n)].median:.1f} ms" for key, name in names.items()
             if (key, n) in cpu_ms and cpu_ms[(key, n)].ok]
    return ", ".join(parts) + " of CPU per agent" if parts else "no CPU figure"


def _section(ctx: Context, n: int, latency: float, tool_latency: float,
             points: list[tuple[str, int]],
             reports: dict[tuple[str, int], list[dict[str, Any]]]) -> Section:
    ideal = 2 * latency + tool_latency
    ours = samples(reports[("ga", n)], lambda r: r["wall"])
    rows, series, failures = [], {}, []
    cpu_ms: dict[tuple[str, int], Samples] = {}
    for key, size in points:
        data = reports[(key, size)]
        wall = samples(data, lambda r: r["wall"])
        cpu = samples(data, lambda r: r["cpu"])
        peak = samples(data, lambda r: r["tool_peak"], complete=False)
        best = ideal + (TOOLS - 1) * tool_latency if key == "ga_sequential" else ideal
        per_agent = Samples([1000 * v / size for v in cpu.values], cpu.errors)
        rows.append([CONTENDERS[key], str(size), cell(wall, " s"),
                     f"{wall.median / ideal:.2f}×" if wall.ok else "–", f"{best:g} s",
                     cell(cpu, " s"), cell(per_agent, " ms"), cell(peak)])
        cpu_ms[(key, size)] = per_agent
        if size == n:
            series[CONTENDERS[key]] = [wall]
        failures += [f"tools {key} n={size}: {e}" for e in wall.errors if key != "pydantic_ai"]
    png = plots.bars(ctx.out / "tools.png",
                     f"{n} tool-using agents: model {latency:g} s → {TOOLS} tools of "
                     f"{tool_latency:g} s → model {latency:g} s", "wall time, s", ["wall time"],
                     {label: (label, values) for label, values in series.items()})
    verdict = f"{ours.median / ideal:.2f}×" if ours.ok else "–"
    skipped = "".join(f"\n\n{key}: skipped, {why}." for key, why in ctx.notes.items()
                      if key == "pydantic_ai")
    markdown = "\n\n".join([
        f"{n} agents at once, each: a model turn of {latency:g} s asking for {TOOLS} tools, the "
        f"{TOOLS} tool calls (one HTTP request each to a local tool server answering after "
        f"{tool_latency:g} s), a second model turn of {latency:g} s. Ideal {ideal:g} s. "
        f"{ctx.repeat} alternating repetition(s), median (min–max); `tool peak` is the most tool "
        "requests the tool server had in flight at once. Timings on a shared 2-core machine "
        "are noisy.",
        table(["contender", "agents", "wall time", "÷ ideal", "ideal", "CPU", "CPU / agent",
               "tool peak"], rows),
        f"**greenagents ÷ ideal: {verdict}** (goal ≤ {GOAL}×).",
        "![tool-using agents](tools.png)",
        "**Reading.** One greenlet per agent and one per tool call: the tool calls of one turn, "
        "and of every agent, wait on the network together (the tool peak is how many did), and "
        "tools one after another add 2 × T per agent. What remains is CPU: greenagents runs "
        "every agent in one process on one core, so N agents cost N × (CPU / agent) of wall "
        f"time at least — here {_cpu_note(cpu_ms, n)}, most of it the tools' `requests` calls "
        "and the two model calls, not the loop. A thread pool spreads the same code over both "
        "cores (and, on a machine shared with other work, is given more of it by the "
        "scheduler) at several times the CPU per agent; pydantic-ai needs the tools rewritten "
        "as coroutines on an async HTTP client." + skipped,
    ])
    return Section("8. Tool-using agents", markdown, [png], {"failures": failures})
