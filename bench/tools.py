"""Figure 8 — tool-using agents: N agents at once, each model → 3 tool calls → model.

What it measures: the wall time of N tool-using agents started together, each one model turn of
L seconds that asks for three tools, the three tool calls (one blocking HTTP request each to a
local tool server answering after T seconds, through ``requests``), then a second model turn of
L seconds. Ideal: 2·L + T (2.5 s at L = 1, T = 0.5). Why: a tool is ordinary blocking code; after
patching, one agent's three calls and every agent's calls wait on the network together, with no
async rewrite.
The tool server counts its requests in flight: the peak shows how many tool calls really overlapped.

Contenders: greenagents (``ga.batch`` of the agent, ``tool_concurrency`` 8), at N and at 100
agents, its tools on one shared ``requests.Session``; the same agent with the issue's tool code
(``requests.get``: a new Session, connection and proxy-environment scan per call), and with tools
that only sleep T (greenagents' own CPU, without the tools' HTTP client); the same agent with
``tool_concurrency = 1`` (tools one after another in each agent:
ideal 2·L + 3·T); the same sync agent code in an unpatched ``ThreadPoolExecutor`` of N threads
(its tool calls then run in threads too, greenagents' fallback); and pydantic-ai on asyncio (async
tools on ``httpx``), a peer with parallel tool calls, at 100 and N agents — at N within a time
cap (:data:`PEER_CAP_S`): its CPU per agent is tens of milliseconds, so 1,000 agents take minutes
on this machine; the row says how many finished within the cap.

Every row also gives the CPU the simulator and the tool server each spent during the run: all
three processes share the machine's cores (and so does other work: the load average as the row
began is in the table too). And a floor for the wall time computed from the
client's CPU: the agents start together, so nothing but sending the first requests can happen
before the first answers arrive, one latency L in; all the rest of the client's CPU comes after
(one process, one core at a time). Floor ≈ L + client CPU (for the thread pool, spread over the
machine's cores: L + CPU / cores), or the row's ideal when that is larger.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bench import plots
from bench.harness import Context, Section, cell, rounds, run_child, samples, simulator, table

GOAL = 1.2
#: Seconds the peer gets at N agents (smoke, quick, full): what finished by then is reported.
PEER_CAP_S = (30.0, 60.0, 300.0)
SMALL = 100  # the second size: greenagents and the peer at a load one core carries easily
CONTENDERS = {
    "ga": "greenagents ga.batch, tools in greenlets (shared requests.Session)",
    "ga_get": "greenagents, the issue's tools: requests.get (new Session per call)",
    "ga_sleep": "greenagents, tools that only sleep T (no HTTP)",
    "ga_sequential": "greenagents, tool_concurrency=1 (tools one by one)",
    "threads": "ThreadPoolExecutor(N), same sync agent code, unpatched",
    "pydantic_ai": "pydantic-ai on asyncio (async tools on httpx)",
}
GREEN = {"ga": True, "ga_get": True, "ga_sleep": True, "ga_sequential": True, "threads": False,
         "pydantic_ai": False}
TOOLS = 3


def _get(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, method="GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def _post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30).close()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# ------------------------------------------------------------------ child side

def _sync_agent(url: str, tools_url: str, width: int, concurrency: int,
                tool: Literal["session", "get", "sleep"] = "session", sleep: float = 0.0) -> Any:
    """The agent every sync contender runs: three tools, each one ``requests`` call — on one
    shared Session (``"session"``), or ``requests.get`` as the issue writes it (``"get"``) — or
    a sleep of ``sleep`` seconds instead (``"sleep"``: the same loop without the tools' HTTP)."""
    import requests

    import greenagents as ga

    session = requests.Session()
    # requests scans os.environ for proxy settings on every request (~0.3 ms of CPU here); a
    # program making thousands of local calls turns that off. requests.get cannot: it makes a
    # Session (and a connection) per call.
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=width * TOOLS))

    def fetch(path: str, params: dict[str, str]) -> str:
        if tool == "sleep":
            time.sleep(sleep)
            return f"{path}: {params}"
        if tool == "get":
            return requests.get(f"{tools_url}{path}", params=params, timeout=30).text
        return session.get(f"{tools_url}{path}", params=params, timeout=30).text

    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        """Current weather for a city."""
        return fetch(f"/weather/{city}", {"unit": unit})

    def search_flights(origin: str, destination: str) -> str:
        """Flights between two cities."""
        return fetch("/flights", {"from": origin, "to": destination})

    def find_hotels(city: str, nights: int = 1) -> str:
        """Hotels in a city."""
        return fetch("/hotels", {"city": city, "nights": str(nights)})

    class TravelAgent(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = url
        instructions = "Plan a trip."
        tools = (get_weather, search_flights, find_hotels)
        tool_concurrency = concurrency
        tool_timeout = 60.0
        timeout = 60.0

    return TravelAgent


def _run_sync(spec: dict[str, Any], base_url: str, n: int, width: int, finished: list[int]) -> int:
    key = spec["contender"]
    tool = {"ga_get": "get", "ga_sleep": "sleep"}.get(key, "session")
    agent = _sync_agent(base_url, spec["tools_url"], width, 1 if key == "ga_sequential" else 8,
                        tool=tool, sleep=spec["tool_latency"])
    calls = [f"trip {i}" for i in range(n)]
    if spec["contender"] == "threads":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(width) as pool:
            return sum(r.ok for r in pool.map(agent.call, calls))
    import greenagents as ga

    return sum(r.ok for r in ga.batch([(agent, (c,), {}) for c in calls], max_concurrent=width))


def _run_pydantic_ai(spec: dict[str, Any], base_url: str, n: int, width: int,
                     finished: list[int]) -> int:
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
                    finished[0] += 1
                    return True

            done = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
            errors = [d for d in done if isinstance(d, BaseException)]
            if errors and len(errors) == n:
                raise errors[0]
            return sum(d is True for d in done)

    return asyncio.run(main())


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up (zero latencies), then time ``n`` agents ``width`` wide; the tool server's peak.

    With ``cap_s``, a timer thread reports what finished once the cap has passed and ends the
    process: an event loop busy with a thousand agents answers its own timeout minutes late.
    """
    from bench import harness

    runner: Callable[[dict[str, Any], str, int, int, list[int]], int] = (
        _run_pydantic_ai if spec["contender"] == "pydantic_ai" else _run_sync)
    warm = {**spec, "tools_url": spec["warm_tools_url"], "tool_latency": 0.0}
    runner(warm, spec["warm_url"], 2, 2, [0])
    _post(spec["tools_url"] + "/_tools/reset")
    harness.reset_peak_rss()
    servers = [_cpu_s(pid) for pid in spec["server_pids"]]
    cpu, wall = time.process_time(), time.perf_counter()

    def report(ok: int, capped: bool = False) -> dict[str, Any]:
        tools = _get(spec["tools_url"] + "/_tools/stats")
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "ok": ok,
                "n": spec["n"], "rss_peak_kb": harness.peak_rss_kb(), "tool_peak": tools["peak"],
                "tool_requests": tools["requests"], "capped": capped,
                "servers_cpu": [_cpu_s(pid) - before
                                for pid, before in zip(spec["server_pids"], servers, strict=True)]}

    finished = [0]  # agents done so far, counted by the runner, read at the cap

    def at_cap() -> None:
        harness.emit(report(finished[0], capped=True))
        os._exit(0)  # the agents still running are abandoned with the process

    timer = threading.Timer(spec["cap_s"], at_cap) if spec.get("cap_s") else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    ok = runner(spec, spec["base_url"], spec["n"], spec["n"], finished)
    if timer is not None:
        timer.cancel()
    return report(ok)


# ------------------------------------------------------------------ parent side

def _points(ctx: Context, n: int) -> list[tuple[str, int]]:
    """``(contender, agents)`` in the table's order: everyone at ``n``; greenagents and the peer
    also at :data:`SMALL` (when ``n`` is larger)."""
    small = [SMALL] if n > SMALL else []
    return [("ga", n), *(("ga", size) for size in small), ("ga_get", n), ("ga_sleep", n),
            ("ga_sequential", n), ("threads", n), *(("pydantic_ai", size) for size in small),
            ("pydantic_ai", n)]


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
    cap = ctx.pick(*PEER_CAP_S)
    ideal = 2 * latency + tool_latency
    from greenagents.testing import ToolServer

    points = [p for p in _points(ctx, n) if _usable(ctx, p[0])]
    reports: dict[tuple[str, int], list[dict[str, Any]]] = {p: [] for p in points}
    load = os.getloadavg()[0]
    with simulator(latency=latency) as sim, simulator(latency=0.0) as warm, \
            ToolServer(latency=tool_latency).start_process() as tools, \
            ToolServer(latency=0.0).start_process() as warm_tools:
        ctx.log(f"tools: {n} agents, model {latency:g} s → {TOOLS} tools of {tool_latency:g} s "
                f"→ model {latency:g} s (ideal {ideal:g} s), load {load:.1f}")
        labels = [f"{key}@{size}" for key, size in points]
        for number, label in rounds(labels, ctx.repeat):
            key, size = label.split("@")[0], int(label.split("@")[1])
            spec = {"task": "tools:child", "contender": key, "green": GREEN[key], "n": size,
                    "base_url": sim.base_url, "warm_url": warm.base_url,
                    "tools_url": tools.url, "warm_tools_url": warm_tools.url,
                    "tool_latency": tool_latency, "server_pids": [sim.process.pid,
                                                                  tools.process.pid],
                    "cap_s": cap if key == "pydantic_ai" and size > SMALL else None}
            started_load = os.getloadavg()[0]
            report = {**run_child(spec, timeout=max(600, 2 * cap)), "load": started_load}
            reports[(key, size)].append(report)
            summary = report.get("error") or (
                f"wall {report['wall']:.2f}s cpu {report['cpu']:.2f}s simulator "
                f"{report['servers_cpu'][0]:.2f}s tool server {report['servers_cpu'][1]:.2f}s "
                f"ok {report['ok']}/{size} tool peak "
                f"{report['tool_peak']}" + (" (capped)" if report["capped"] else ""))
            ctx.log(f"  tools n={size} round {number + 1}/{ctx.repeat} {key}: {summary}")
    shape = Shape(n, latency, tool_latency, cap, load, os.cpu_count() or 1)
    return _section(ctx, shape, points, reports)


@dataclass(frozen=True)
class Shape:
    """The run's sizes: agents, model and tool latencies, the peer's cap, the load at the start."""

    n: int
    latency: float
    tool_latency: float
    cap: float
    load: float
    cores: int

    @property
    def ideal(self) -> float:
        return 2 * self.latency + self.tool_latency


def _row(shape: Shape, key: str, size: int, data: list[dict[str, Any]]) -> list[str]:
    """One table row; a run stopped at the cap shows how many agents finished within it, and its
    CPU per agent is per agent finished."""
    capped = any(r.get("capped") for r in data)
    wall = samples(data, lambda r: r["wall"])
    cpu = samples(data, lambda r: r["cpu"], complete=not capped)
    per_agent = samples(data, lambda r: 1000 * r["cpu"] / r["ok"] if r["ok"] else float("nan"),
                        complete=not capped)
    simulator_cpu = samples(data, lambda r: r["servers_cpu"][0], complete=not capped)
    tool_server_cpu = samples(data, lambda r: r["servers_cpu"][1], complete=not capped)
    peak = samples(data, lambda r: r["tool_peak"], complete=False)
    load = samples(data, lambda r: r["load"], complete=False)
    best = shape.ideal + (TOOLS - 1) * shape.tool_latency if key == "ga_sequential" else shape.ideal
    spread = shape.cores if key == "threads" else 1  # threads run on every core, the rest on one
    floor = samples(data, lambda r: max(best, shape.latency + r["cpu"] / spread),
                    complete=not capped)
    if capped:
        finished = min(r["ok"] for r in data if "error" not in r)
        wall_text, ratio_text = f"> {shape.cap:g} s: {finished}/{size} done by then", "–"
    else:
        wall_text = cell(wall, " s")
        ratio_text = f"{wall.median / shape.ideal:.2f}×" if wall.ok else "–"
    return [CONTENDERS[key], str(size), wall_text, ratio_text, f"{best:g} s", cell(floor, " s"),
            cell(cpu, " s"), cell(per_agent, " ms"), cell(simulator_cpu, " s"),
            cell(tool_server_cpu, " s"), cell(peak), cell(load)]


def _section(ctx: Context, shape: Shape, points: list[tuple[str, int]],
             reports: dict[tuple[str, int], list[dict[str, Any]]]) -> Section:
    n, ideal = shape.n, shape.ideal
    rows, series, failures = [], {}, []
    for key, size in points:
        data = reports[(key, size)]
        rows.append(_row(shape, key, size, data))
        wall = samples(data, lambda r: r["wall"])
        if size == n and not any(r.get("capped") for r in data):
            series[CONTENDERS[key]] = [wall]
        failures += [f"tools {key} n={size}: {e}" for e in wall.errors if key != "pydantic_ai"]
    png = plots.bars(ctx.out / "tools.png",
                     f"{n} tool-using agents: model {shape.latency:g} s → {TOOLS} tools of "
                     f"{shape.tool_latency:g} s → model {shape.latency:g} s", "wall time, s",
                     ["wall time"], {label: (label, values) for label, values in series.items()},
                     goal=GOAL * ideal, goal_label=f"goal: {GOAL}× ideal")
    tools = {"ga": "shared Session", "ga_get": "the issue's requests.get",
             "ga_sleep": "sleeping tools"}
    ratios = {(key, size): samples(reports[(key, size)], lambda r: r["wall"])
              for key, size in points if key in tools}
    verdict = ", ".join(f"{w.median / ideal:.2f}× at {size:,} agents ({tools[key]})" if w.ok else
                        f"– at {size:,} ({tools[key]})" for (key, size), w in ratios.items())
    skipped = "".join(f"\n\n{key}: skipped, {why}." for key, why in ctx.notes.items()
                      if key == "pydantic_ai")
    markdown = "\n\n".join([
        f"{n} agents at once, each: a model turn of {shape.latency:g} s asking for {TOOLS} "
        f"tools, the {TOOLS} tool calls (one `requests` call each to a local tool server "
        f"answering after {shape.tool_latency:g} s: on one shared `requests.Session`, or "
        "with `requests.get` as the issue writes the tool), a second model turn of "
        f"{shape.latency:g} s. Ideal {ideal:g} s. {ctx.repeat} alternating repetition(s), "
        "median (min–max). `CPU floor`: the wall time the client's CPU allows, L + CPU "
        f"(the thread pool: L + CPU / {shape.cores} cores; see the reading); `simulator CPU`, "
        "`tool server CPU`: what each server (in its own process) spent during the run; `tool "
        "peak`: the most tool requests in flight at once; `load`: the machine's 1-minute load "
        "average as the row began (other work on the same cores). The peer at "
        f"{n:,} agents is stopped after {shape.cap:g} s. Load average "
        f"{shape.load:.1f} at the start, on a shared 2-core machine: timings are noisy.",
        table(["contender", "agents", "wall time", "÷ ideal", "ideal", "CPU floor", "CPU",
               "CPU / agent", "simulator CPU", "tool server CPU", "tool peak", "load"], rows),
        f"**greenagents ÷ ideal: {verdict}** (goal ≤ {GOAL}×).",
        "![tool-using agents](tools.png)",
        _reading(shape, reports),
        *([skipped.strip()] if skipped else []),
    ])
    return Section("8. Tool-using agents", markdown, [png], {"failures": failures})


def _reading(shape: Shape, reports: dict[tuple[str, int], list[dict[str, Any]]]) -> str:
    """The reading, with the CPU budget the goal leaves at ``shape.n`` agents worked out from the
    rows' CPU per agent (when both greenagents rows at ``n`` have it)."""
    n = shape.n

    def per_agent(key: str) -> float | None:
        data = samples(reports.get((key, n), []), lambda r: 1000 * r["cpu"] / r["ok"])
        return data.median if data.ok else None

    budget_s = GOAL * shape.ideal - shape.latency
    allowed = 1000 * budget_s / n  # ms of client CPU per agent
    session, issue, sleeping = per_agent("ga"), per_agent("ga_get"), per_agent("ga_sleep")
    budget = "" if session is None or issue is None or sleeping is None else (
        f" {GOAL}× ideal at {n:,} agents needs the client's CPU within {GOAL}·ideal − L = "
        f"{budget_s:.1f} s: {allowed:.1f} ms per agent for two model calls, three tool calls "
        f"and the loop. greenagents' own share took {sleeping:.2f} ms "
        f"({'within' if sleeping <= allowed else 'over'} it); the tools' three `requests` calls "
        f"added {session - sleeping:.2f} ms on a shared Session and {issue - sleeping:.2f} ms as "
        "`requests.get` (a Session, a connection and a proxy-environment scan per call)"
        + (", each alone over the budget." if min(session, issue) - sleeping > allowed else "."))
    return (
        "**Reading.** One greenlet per agent and one per tool call: the tool calls of one turn, "
        "and of every agent, wait on the network together (the tool peak is how many did); "
        "tools one after another add 2 × T per agent. What is left is CPU. The agents start "
        "together, so nothing but sending the first requests happens before the first answers "
        "arrive, L in; the rest of the client's CPU comes after, one core at a time: the wall "
        "time cannot be much below L + the client's CPU (`CPU floor`), and it gets only what the "
        "servers and everything else on the machine leave of the cores: a wall time well above "
        "its CPU floor is time the client waited for a core or for the simulator, not work "
        "(see the load column). The CPU per agent with "
        "sleeping tools is greenagents' own share (two model calls, the loop, three tool "
        "greenlets); the rest of the HTTP rows' is the tools' own `requests` calls (user code, "
        "the tools' HTTP client)." + budget + " At 100 "
        "agents CPU is not the bound. A thread pool spreads the same code over every core at "
        "several times the CPU per agent; pydantic-ai needs the tools rewritten as coroutines on "
        "an async HTTP client, and its CPU per agent is an order of magnitude above "
        "greenagents'.")
