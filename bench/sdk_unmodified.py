"""Unmodified SDK code, greenlets against threads: ``python bench/sdk_unmodified.py``.

The code under test is what a user already has: one ``openai.OpenAI()`` (or
``anthropic.Anthropic()``) client built once at module level, and a plain function calling it.
We run that function ``--calls`` times, ``--width`` at once, two ways, each in its own child
process so that neither pays for the other's patching:

* ``greenlets``: ``import greenagents.monkey`` first, then ``ga.each(..., max_concurrent=width)``;
* ``threads``: no patching, ``concurrent.futures.ThreadPoolExecutor(width)``.

Each child runs the batch twice — cold (the client's pool is empty, every call opens a
connection) and warm (a second, identical batch on the kept-alive pool) — and reports wall time
and the process CPU (user + system) of each. The simulator (OpenAI- and Anthropic-compatible, fixed
latency) runs in a third process so its CPU is not counted. Rows are interleaved over
``--repeat`` rounds to spread out the noise of a shared machine.

    python bench/sdk_unmodified.py                      # 300 calls, 300 wide, 1 s latency
    python bench/sdk_unmodified.py --width 1000 --calls 1000 --sdk anthropic
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--child=greenlets" in sys.argv:
    import greenagents.monkey  # noqa: F401  # the greenlet child patches before anything else

# isort: split

import argparse
import json
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODES = ("greenlets", "threads")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sdk_call(sdk: str, url: str) -> Callable[[int], str]:
    """The user's code: a client built once (after patching) and a plain function using it."""
    if sdk == "openai":
        import openai

        openai_client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench")

        def ask_openai(i: int) -> str:
            reply = openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}])
            return reply.choices[0].message.content or ""

        return ask_openai
    import anthropic

    anthropic_client = anthropic.Anthropic(base_url=url, api_key="bench")

    def ask_anthropic(i: int) -> str:
        reply = anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": f"call {i}"}])
        return reply.content[0].text  # type: ignore[union-attr]

    return ask_anthropic


def _runner(mode: str, width: int) -> Callable[[Callable[[int], str], int], int]:
    """Run ``fn`` over ``range(calls)`` ``width`` at once; return how many succeeded."""
    if mode == "greenlets":
        import greenagents as ga

        def green(fn: Callable[[int], str], calls: int) -> int:
            return sum(r.ok for r in ga.each(range(calls), fn, max_concurrent=width))

        return green
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(width)

    def threads(fn: Callable[[int], str], calls: int) -> int:
        return sum(1 for _ in executor.map(fn, range(calls)))

    return threads


def child(mode: str, sdk: str, url: str, calls: int, width: int) -> dict[str, Any]:
    """One process, one mode: a cold batch then a warm one; wall and CPU seconds of each."""
    fn, run = _sdk_call(sdk, url), _runner(mode, width)
    report: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        wall, cpu = time.perf_counter(), _cpu_s()
        ok = run(fn, calls)
        report[phase] = {"wall": time.perf_counter() - wall, "cpu": _cpu_s() - cpu, "ok": ok}
    return report


def _spawn_child(mode: str, args: argparse.Namespace, url: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), f"--child={mode}", "--url", url,
               "--sdk", args.sdk, "--calls", str(args.calls), "--width", str(args.width)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdk", choices=("openai", "anthropic"), default="openai")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--width", type=int, default=300)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sdk, args.url, args.calls, args.width)))
        return

    from greenagents.testing import Simulator

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with Simulator(latency=args.latency).start_process() as sim:
        for _ in range(args.repeat):
            for mode in MODES:
                runs[mode].append(_spawn_child(mode, args, sim.url))
    print(f"{args.sdk} SDK, unmodified: {args.calls} calls of {args.latency:g} s, {args.width} at "
          f"once (median of {args.repeat})")
    print(f"{'mode':<10} {'cold wall':>9} {'cold cpu':>9} {'warm wall':>9} {'warm cpu':>9} {'ok':>6}")
    for mode, reports in runs.items():
        cells = [statistics.median(r[phase][key] for r in reports)
                 for phase in ("cold", "warm") for key in ("wall", "cpu")]
        ok = min(r[phase]["ok"] for r in reports for phase in ("cold", "warm"))
        print(f"{mode:<10} " + " ".join(f"{cell:>8.2f}s" for cell in cells) + f" {ok:>6}")


if __name__ == "__main__":
    main()
