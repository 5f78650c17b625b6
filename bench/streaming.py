"""Figure 8 — streaming: N concurrent streamed answers of T tokens at R tokens/s.

What it measures, per client, in a child process of its own (the simulator in another): how late
each stream's first token reaches the caller after the simulator sent it (the simulator records
the moment per stream; both processes read the machine's monotonic clock), p50 and p95 over the N
streams, and the time to first token from the call's start; tokens per second delivered to the
caller (all streams' tokens ÷ the run's wall time); and the client process's CPU per token. Why: a chat UI's
responsiveness is the first token, and a server relaying thousands of streams spends its CPU per
token — the event framing, the JSON of each chunk, the switch to the reader.

Contenders: ``Agent.stream`` in ``ga.each`` (greenlets; deltas read from the socket as the loop
asks), over the transport a patched process picks (geventhttpclient, the ``fast`` extra) and
again forced onto urllib3 (the reference); the official ``AsyncOpenAI`` client's
``stream=True`` under ``asyncio.gather``; the official sync ``OpenAI`` client's ``stream=True``
in an N-thread pool. Every contender asks for ``stream_options.include_usage`` and counts the
content deltas it got.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench import harness, plots
from bench.clients import API_KEY, MODEL, messages
from bench.harness import Context, Samples, Section, cell, ratio, run_child, table

CONTENDERS = {"raw_socket": "baseline: raw sockets, no parsing (greenlets)",
              "ga_stream": "greenagents Agent.stream (greenlets)",
              "ga_stream_urllib3": "greenagents Agent.stream over urllib3 (greenlets)",
              "async_openai": "AsyncOpenAI stream=True (asyncio)",
              "threads_openai": "OpenAI stream=True (N threads)"}
GREEN = {"raw_socket", "ga_stream", "ga_stream_urllib3"}
GOAL_TTFT_MS = 5.0
Timing = tuple[float, float, int]  # a stream's start, its first content delta (time.monotonic()), deltas


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _raw_socket(base_url: str, n: int) -> Callable[[list[int]], list[Timing]]:
    """The cheapest client there is: what the simulator's first token costs to see at all."""
    import json
    import socket

    import gevent

    host, port = base_url.removeprefix("http://").removesuffix("/v1").split(":")

    def one(i: int) -> Timing:
        body = json.dumps({"model": MODEL, "messages": messages(i), "stream": True}).encode()
        start, first, contents, tail = time.monotonic(), 0.0, 0, b""
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            while b"data: [DONE]" not in tail:  # counted per read: no copy of what came before
                chunk = sock.recv(65536)
                if not chunk:
                    break
                found = chunk.count(b'"content":"') - chunk.count(b'"content":""')
                if found and not first:
                    first = time.monotonic()
                contents += found
                tail = tail[-16:] + chunk[-64:]  # [DONE] split across two reads
        return start, first, contents

    def run(indices: list[int]) -> list[Timing]:
        greenlets = [gevent.spawn(one, i) for i in indices]
        gevent.joinall(greenlets, raise_error=True)
        return [g.value for g in greenlets]

    return run


def _greenagents(base_url: str, n: int, transport: str = "auto") -> Callable[[int], Timing]:
    """``Agent.stream`` over the transport a patched process picks (geventhttpclient, with the
    ``fast`` extra), or over ``transport``."""
    import greenagents as ga

    class StreamAgent(ga.Agent):
        model = f"openai/{MODEL}"

        def prompt(self, i: int) -> list[dict[str, Any]]:
            return messages(i)  # type: ignore[return-value]

    StreamAgent.base_url = base_url
    ga.configure(max_concurrency=n, http_transport=transport)

    def one(i: int) -> Timing:
        start, first, count = time.monotonic(), 0.0, 0
        for _ in StreamAgent.stream(i=i):
            if not count:
                first = time.monotonic()
            count += 1
        return start, first, count

    def run(indices: list[int]) -> list[Timing]:
        return [r.unwrap() for r in ga.each(indices, one, max_concurrent=len(indices))]

    return run  # type: ignore[return-value]


def _async_openai(base_url: str, n: int) -> Callable[[list[int]], list[Timing]]:
    import asyncio

    import httpx
    import openai

    async def many(indices: list[int]) -> list[Timing]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0,
                                    http_client=httpx.AsyncClient(limits=limits, timeout=60))

        async def one(i: int) -> Timing:
            start, first, count = time.monotonic(), 0.0, 0
            stream = await client.chat.completions.create(
                model=MODEL, messages=messages(i), stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not count:
                        first = time.monotonic()
                    count += 1
            return start, first, count

        try:
            return list(await asyncio.gather(*(one(i) for i in indices)))
        finally:
            await client.close()

    return lambda indices: asyncio.run(many(indices))


def _threads_openai(base_url: str, n: int) -> Callable[[list[int]], list[Timing]]:
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import openai

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0,
                           http_client=httpx.Client(limits=limits, timeout=60))
    executor = ThreadPoolExecutor(n)

    def one(i: int) -> Timing:
        start, first, count = time.monotonic(), 0.0, 0
        stream = client.chat.completions.create(
            model=MODEL, messages=messages(i), stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if not count:
                    first = time.monotonic()
                count += 1
        return start, first, count

    return lambda indices: list(executor.map(one, indices))


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up on the zero-latency simulator, then time ``n`` streams at once."""
    from bench.child import sim_call

    make = {"raw_socket": _raw_socket, "ga_stream": _greenagents,
            "ga_stream_urllib3": functools.partial(_greenagents, transport="urllib3"),
            "async_openai": _async_openai, "threads_openai": _threads_openai}[spec["contender"]]
    n = spec["n"]
    make(spec["warmup_url"], n)(list(range(-3, 0)))
    run = make(spec["base_url"], n)
    sim_call(spec["base_url"], "/_sim/reset", "POST")
    cpu, wall = time.process_time(), time.perf_counter()
    streams = run(list(range(n)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sent = sim_call(spec["base_url"], "/_sim/first_tokens")  # same clock: the machine's
    # the simulator's first token -> the caller's first delta, per stream
    late = [first - sent[messages(i)[-1]["content"]] for i, (_, first, _) in enumerate(streams)]
    ttft = [first - start for start, first, _ in streams]
    return {"wall": wall, "cpu": cpu, "tokens": sum(count for *_, count in streams), "n": n,
            "complete": sum(count == spec["tokens"] for *_, count in streams),
            "late_p50": statistics.median(late), "late_p95": _percentile(late, 0.95),
            "ttft_p50": statistics.median(ttft), "ttft_p95": _percentile(ttft, 0.95)}


def _measure(ctx: Context, keys: list[str], n: int, tokens: int, rate: float,
             latency: float) -> dict[str, list[dict[str, Any]]]:
    """One run of each contender: ``n`` streams of ``tokens`` tokens at ``rate`` tokens/s."""
    data: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    with harness.simulator(latency=latency, token_latency=1 / rate, answer_words=tokens) as sim, \
            harness.simulator(latency=0.0, answer_words=tokens) as warm:
        ctx.log(f"streaming: {n} streams of {tokens} tokens at {rate}/s, first token {latency} s")
        simulator = psutil.Process(sim.process.pid)
        for number, key in harness.rounds(keys, 1):  # 1,000 streams: one run each
            sim_cpu = _cpu_s(simulator)
            report = run_child({"task": "streaming:child", "contender": key, "green": key in GREEN,
                                "base_url": sim.base_url, "warmup_url": warm.base_url, "n": n,
                                "tokens": tokens}, timeout=600)
            if "error" not in report and report["complete"] != n:
                report = {"error": f"only {report['complete']}/{n} streams were complete"}
            if "error" not in report:  # the simulator's share of the machine, for the reading
                report["sim_cpu"] = _cpu_s(simulator) - sim_cpu
            data[key].append(report)
            ctx.log(f"  streaming round {number + 1} {key}: " + (report.get("error") or (
                f"first token {1000 * report['late_p95']:.1f} ms late p95, "
                f"cpu {1e6 * report['cpu'] / report['tokens']:.1f} µs/token")))
    return data


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _budget(n: int, rate: float, client: Samples, simulator: Samples, floor: Samples) -> str:
    """The reading's arithmetic: the cores this width asks of the machine, and of the client's
    one core, from this run."""
    if not (client.ok and simulator.ok):
        return ""
    asked = n * rate
    cores = asked * (client.median + simulator.median) / 1e6
    one_core = (f" A client process runs on one core: at that rate greenagents' CPU per token "
                f"is {asked * client.median / 1e6:.0%} of it, the raw-socket floor's "
                f"{asked * floor.median / 1e6:.0%}; a first token waits behind whatever the "
                "client has queued, so the goal needs the client well under one core, not only "
                "the machine under its two." if floor.ok else "")
    return (f"At {n:,} streams of {rate:g} tokens/s the machine is asked for {asked:,.0f} tokens/s;"
            f" in this run greenagents' client spent {client.median:.1f} µs of CPU per token and "
            f"the simulator {simulator.median:.1f} µs: {cores:.2f} cores' worth at that rate, of "
            f"the {os.cpu_count()} this machine has, shared with its other load (the load average "
            "above). The first-token goal needs that sum well under the cores left over, or "
            "tokens queue." + one_core)


def _values(reports: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> Samples:
    out = Samples()
    for report in reports:
        out.add(None, report["error"]) if "error" in report else out.add(value(report))
    return out


def run(ctx: Context) -> Section:
    n, tokens, rate, latency = ctx.pick((10, 10, 100, 0.1), (200, 100, 50, 0.5),
                                        (1000, 200, 50, 0.5))
    sim_first = latency + 1 / rate  # the simulator's first content delta
    data = _measure(ctx, list(CONTENDERS), n, tokens, rate, latency)
    # the same width at a pace the simulator keeps up with on this machine: the client's own delay
    slow_tokens, slow_rate = ctx.pick((5, 10.0), (20, 5.0), (20, 5.0))
    slow = _measure(ctx, sorted(GREEN), n, slow_tokens, slow_rate, latency)

    def values(key: str, value: Callable[[dict[str, Any]], float]) -> Samples:
        return _values(data[key], value)

    late50 = {k: values(k, lambda r: 1000 * r["late_p50"]) for k in CONTENDERS}
    late95 = {k: values(k, lambda r: 1000 * r["late_p95"]) for k in CONTENDERS}
    ttft = {k: values(k, lambda r: 1000 * (r["ttft_p95"] - sim_first)) for k in CONTENDERS}
    rates = {k: values(k, lambda r: r["tokens"] / r["wall"]) for k in CONTENDERS}
    cpu = {k: values(k, lambda r: 1e6 * r["cpu"] / r["tokens"]) for k in CONTENDERS}
    sim_cpu = {k: values(k, lambda r: 1e6 * r["sim_cpu"] / r["tokens"]) for k in CONTENDERS}
    rows = [[label, cell(late50[k], " ms"), cell(late95[k], " ms"), cell(ttft[k], " ms"),
             cell(rates[k], "/s"), cell(cpu[k], " µs"),
             ratio(cpu["ga_stream"], cpu[k]) if k != "raw_socket" else "–", cell(sim_cpu[k], " µs")]
            for k, label in CONTENDERS.items()]
    series = {k: (label, [cpu[k], late95[k]]) for k, label in CONTENDERS.items()}
    png = plots.bars(ctx.out / "streaming.png",
                     f"{n} streams of {tokens} tokens at {rate}/s", "µs per token / ms",
                     ["CPU per token, µs", "first token late p95, ms"], series)
    ideal = n * tokens / (latency + tokens / rate)
    slow_rows = [[CONTENDERS[k], cell(_values(slow[k], lambda r: 1000 * r["late_p50"]), " ms"),
                  cell(_values(slow[k], lambda r: 1000 * r["late_p95"]), " ms"),
                  cell(_values(slow[k], lambda r: 1e6 * r["cpu"] / r["tokens"]), " µs"),
                  cell(_values(slow[k], lambda r: 1e6 * r["sim_cpu"] / r["tokens"]), " µs")]
                 for k in CONTENDERS if k in GREEN]
    failures = [f"{k}: {r['error']}" for runs in (data, slow) for k, rs in runs.items()
                for r in rs if "error" in r]
    markdown = "\n\n".join([
        f"{n} concurrent streams of {tokens} tokens at {rate} tokens/s (first token after "
        f"{latency} s), all started at once; one run per client (the SDKs take minutes at "
        "1,000 streams). First token late: when the caller got its first content delta minus "
        "when the simulator sent it (both read the machine's monotonic clock; the simulator "
        "records each stream's), p50 and p95 over the streams — the client's own delay. Time to "
        "first token: from starting the call, minus the simulator's nominal "
        f"{sim_first:g} s, so it also holds starting {n} requests at once. Tokens/s: every "
        f"stream's tokens ÷ the run's wall time (ideal {ideal:,.0f}/s). CPU per token: the "
        "client process's CPU time ÷ tokens. The baseline reads raw sockets and only looks for "
        "the first content: the floor this machine allows.",
        table(["client", "first token late p50", "late p95", "time to first token p95",
               "tokens/s delivered", "CPU per token", "greenagents ÷ this (CPU)",
               "simulator CPU per token"], rows),
        f"The same {n} streams at {slow_rate:g} tokens/s ({slow_tokens} tokens each), a pace the "
        "simulator keeps up with on this machine, so a first token late is the client's own "
        f"delay (CPU per token here includes each request's set-up, spread over {slow_tokens} "
        "tokens):",
        table(["client", "first token late p50", "late p95", "CPU per token",
               "simulator CPU per token"], slow_rows),
        f"Goals: first-token overhead ≤ {GOAL_TTFT_MS:g} ms p95 at 1,000 streams; CPU per token at "
        "or below AsyncOpenAI's.",
        "![streaming](streaming.png)",
        "**Reading.** greenagents reads each delta from the socket when the loop asks for it: "
        "SSE framing by a small parser, each chunk's JSON by pydantic-core, no per-chunk model "
        "objects, no queue between reader and consumer. The SDKs build a pydantic "
        "`ChatCompletionChunk` per event (and the threads pay a GIL hand-off per read). A "
        "client whose CPU per token × the tokens/s asked for exceeds its share of a core falls "
        "behind, and every later token, first ones of new streams included, comes late. Time "
        f"to first token at this width also holds starting {n} requests at once (each client "
        "opens as many connections), and the machine's other load shows here first. "
        + _budget(n, rate, cpu["ga_stream"], sim_cpu["ga_stream"], cpu["raw_socket"]) +
        " The simulator paces every stream from one greenlet (greenagents/testing/pacer.py: "
        "each due token is one framed `os.write`, at most one wake-up per millisecond for all "
        "streams while it keeps up), and behind schedule sends a stream's overdue tokens in one write; both "
        "sides' CPU per token falls when they are behind (fewer, larger reads and writes). "
        "When they are behind, answers arrive "
        "in bursts and a stream's first token waits while the client works through the tokens "
        "before it (each stream yields to the others once its first delta is out): the first "
        "table's \"late\" is mostly that queue. The second table, at a pace both keep up with, "
        "measures the client alone.",
    ])
    return Section("9. Streaming", markdown, [png], {"failures": failures})
