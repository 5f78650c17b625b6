"""Throughput of greenagents on Celery with 1, 2 and 4 worker processes: ``python bench/celery_scale.py``.

One redis-server (broker, results), one simulator process (OpenAI-compatible, 1 s latency) and
N workers ``celery -A greenagents.celery.worker worker -P gevent -c C``, all on this machine; the
dispatcher sends ``--calls`` agent calls (``greenagents.demo:SentimentAgent``, structured
output) and waits for every Result. Worker start-up is not timed. Prints one table, nothing else.

On many machines it is the same picture: point every worker at the same broker URL
(``GREENAGENTS_CELERY_URL=redis://broker:6379/0``) and throughput grows with the workers until
the provider's rate limit (shared through that Redis) or the broker is the bound.
"""

from __future__ import annotations

import greenagents.monkey  # noqa: F401  # first: patch before anything below imports ssl

# isort: split

import argparse
import subprocess
import time

import greenagents.celery as ga_celery
from greenagents.celery.local import Workers, redis_server
from greenagents.demo import SentimentAgent, reviews
from greenagents.testing import Simulator


def measure(url: str, sim_url: str, workers: int, concurrency: int, calls: int) -> list[str]:
    texts = reviews(calls)
    with Workers(url, env={"OPENAI_BASE_URL": sim_url}, stderr=subprocess.DEVNULL) as pool:
        pool.start(workers, concurrency=concurrency)
        started = time.perf_counter()
        results = ga_celery.batch(pool.app, [(SentimentAgent, {"text": t}) for t in texts])
        wall = time.perf_counter() - started
    ok = sum(r.ok for r in results)
    return [str(workers), str(concurrency), f"{calls:,}", f"{ok:,}", f"{wall:.1f}",
            f"{calls / wall:,.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=250, help="-c of each worker")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    args = parser.parse_args()
    header = ["workers", "-c each", "calls", "ok", "wall s", "calls/s"]
    rows = []
    with redis_server() as url, Simulator(latency=args.latency).start_process() as sim:
        for count in map(int, args.workers.split(",")):
            rows.append(measure(url, sim.base_url, count, args.concurrency, args.calls))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"greenagents on Celery: {args.calls:,} agent calls, simulator latency {args.latency} s")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
