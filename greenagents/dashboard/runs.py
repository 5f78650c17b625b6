"""Per-run totals and time series, kept in memory and brought up to date incrementally.

Every page of the dashboard needs aggregates (calls, tokens, cost, latency percentiles, errors by
type, calls per second) over runs that can hold a million calls. Computing them per request
would scan the whole log each time; instead :class:`Runs` folds the log in once, with ``GROUP BY``
queries that SQLite runs in C, and afterwards folds in only the rows past the last id it saw
(rows are append-only, ids increase). Memory is bounded by runs × seconds × models, not calls.

Latency is grouped by whole milliseconds, so percentiles are exact to 1 ms.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field

from .store import Store

__all__ = ["LIVE_WINDOW_S", "RunStats", "Runs"]

#: A run whose last call finished this recently counts as running.
LIVE_WINDOW_S = 15.0


@dataclass
class RunStats:
    """What the log says about one run so far."""

    run_id: str
    calls: int = 0
    ok: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: int = 0                 # calls whose cost is known
    retries: int = 0                # attempts beyond the first, over all calls
    retried_calls: int = 0
    cooldown_s: float = 0.0         # backoff slept between attempts (Attempt.wait_s)
    rate_limited: int = 0           # attempts answered 429
    started: float = float("inf")   # unix time the earliest call started
    finished: float = 0.0           # unix time the latest call finished
    done_per_second: dict[int, int] = field(default_factory=lambda: collections.defaultdict(int))
    failed_per_second: dict[int, int] = field(default_factory=lambda: collections.defaultdict(int))
    # calls in flight: whole seconds as a difference array, plus each second's partial overlaps
    inflight_delta: dict[int, int] = field(default_factory=lambda: collections.defaultdict(int))
    inflight_part: dict[int, float] = field(default_factory=lambda: collections.defaultdict(float))
    tokens: dict[tuple[str, int], int] = field(default_factory=lambda: collections.defaultdict(int))
    cost: dict[tuple[str, int], float] = field(default_factory=lambda: collections.defaultdict(float))
    latency_ms: dict[int, int] = field(default_factory=lambda: collections.defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    error_samples: dict[str, list[int]] = field(default_factory=dict)  # class -> first, last id
    models: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    agents: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    extra: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))

    @property
    def failed(self) -> int:
        return self.calls - self.ok

    @property
    def tokens_total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def duration_s(self) -> float:
        return max(self.finished - self.started, 0.0) if self.calls else 0.0

    @property
    def running(self) -> bool:
        return time.time() - self.finished < LIVE_WINDOW_S

    @property
    def state(self) -> str:
        return "running" if self.running else ("failed" if self.ok == 0 else "finished")

    @property
    def throughput(self) -> float:
        """Calls finished per second over the run's life."""
        return self.calls / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, fraction: float) -> float:
        """Latency in seconds below which ``fraction`` of the calls finished (nearest rank)."""
        if not self.calls:
            return 0.0
        keys = sorted(self.latency_ms)
        rank, seen = max(1, round(fraction * self.calls)), 0
        for key in keys:
            seen += self.latency_ms[key]
            if seen >= rank:
                return key / 1000
        return keys[-1] / 1000

    def histogram(self, bins: int = 30) -> list[tuple[float, float, int]]:
        """``(low_s, high_s, calls)`` over equal-width bins up to the p99 (the rest in the last)."""
        if not self.calls:
            return []
        top = max(self.percentile(0.99), 0.001)
        width = top / bins
        counts = [0] * bins
        for key, count in self.latency_ms.items():
            counts[min(int(key / 1000 / width), bins - 1)] += count
        return [(n * width, (n + 1) * width, count) for n, count in enumerate(counts)]

    def inflight(self) -> dict[int, float]:
        """Mean calls in flight during each second: the call-seconds spent in it.

        A call from ``s`` to ``e`` counts 1 in every whole second between, and the fractions it
        covers of the seconds it starts and ends in (``e - s`` if both are the same second).
        """
        if not self.inflight_delta:
            return {}
        level, series = 0, {}
        for second in range(min(self.inflight_delta), max(self.inflight_delta) + 1):
            level += self.inflight_delta.get(second, 0)
            series[second] = level + self.inflight_part.get(second, 0.0)
        return series


class Runs:
    """Every run in a log, folded in incrementally; :meth:`refresh` before reading."""

    def __init__(self, store: Store):
        self.store = store
        self.runs: dict[str, RunStats] = {}
        self.seen_id = 0
        self.refreshed = 0.0
        self._lock = threading.Lock()

    def refresh(self, min_interval: float = 0.5) -> None:
        """Fold in the calls logged since last time (at most every ``min_interval`` seconds)."""
        with self._lock:
            if time.monotonic() - self.refreshed < min_interval:
                return
            connection = self.store.connect()
            top = connection.execute("SELECT max(id) FROM calls").fetchone()[0] or 0
            if top > self.seen_id:
                self._fold(self.seen_id, top)
                self.seen_id = top
            self.refreshed = time.monotonic()

    def ordered(self) -> list[RunStats]:
        """Runs, the most recently active first."""
        return sorted(self.runs.values(), key=lambda run: -run.finished)

    def _run(self, run_id: str) -> RunStats:
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunStats(run_id)
        return run

    def _fold(self, low: int, high: int) -> None:
        connection = self.store.connect()
        span = "id > ? AND id <= ?"
        has = self.store.has
        cost = "cost_usd" if has("cost_usd") else "NULL"
        prompt = "prompt_tokens" if has("prompt_tokens") else "0"
        completion = "completion_tokens" if has("completion_tokens") else "0"
        for (run_id, model, agent, second, calls, ok, p_tok, c_tok, usd, priced, retries, retried,
             started, finished, end_fraction) in connection.execute(
                f"SELECT run_id, coalesce(model, '?'), agent, CAST(ts AS INTEGER), count(*), "
                f"sum(status = 'ok'), sum({prompt}), sum({completion}), sum({cost}), "
                f"count({cost}), sum(attempts - 1), sum(attempts > 1), min(ts - duration_s), "
                f"max(ts), sum(ts - CAST(ts AS INTEGER)) FROM calls WHERE {span} GROUP BY 1, 2, 3, 4",
                (low, high)):
            run = self._run(run_id)
            run.calls += calls
            run.ok += ok
            run.prompt_tokens += p_tok or 0
            run.completion_tokens += c_tok or 0
            run.cost_usd += usd or 0.0
            run.priced += priced
            run.retries += retries
            run.retried_calls += retried
            run.started = min(run.started, started)
            run.finished = max(run.finished, finished)
            run.done_per_second[second] += calls
            run.failed_per_second[second] += calls - ok
            run.inflight_delta[second] -= calls
            run.inflight_part[second] += end_fraction
            run.tokens[model, second] += (p_tok or 0) + (c_tok or 0)
            run.cost[model, second] += usd or 0.0
            run.models[model] += calls
            run.agents[agent] += calls
        for run_id, second, calls, start_fraction in connection.execute(
                f"SELECT run_id, CAST(ts - duration_s AS INTEGER), count(*), "
                f"sum(ts - duration_s - CAST(ts - duration_s AS INTEGER)) FROM calls "
                f"WHERE {span} GROUP BY 1, 2", (low, high)):
            run = self._run(run_id)
            run.inflight_delta[second] += calls
            run.inflight_part[second] -= start_fraction
        for run_id, millis, calls in connection.execute(
                f"SELECT run_id, CAST(duration_s * 1000 AS INTEGER), count(*) FROM calls "
                f"WHERE {span} GROUP BY 1, 2", (low, high)):
            self._run(run_id).latency_ms[millis] += calls
        for run_id, error, calls, first, last in connection.execute(
                f"SELECT run_id, coalesce(error_class, '?'), count(*), min(id), max(id) FROM calls "
                f"WHERE {span} AND status != 'ok' GROUP BY 1, 2", (low, high)):
            run = self._run(run_id)
            run.errors[error] += calls
            samples = run.error_samples.setdefault(error, [first, last])
            samples[1] = last
        for run_id, history in connection.execute(
                f"SELECT run_id, history FROM calls WHERE {span} AND attempts > 1", (low, high)):
            self._attempts(self._run(run_id), history)
        for column in self.store.columns & {"cached", "budget_stopped"}:  # once those exist
            for run_id, count in connection.execute(
                    f"SELECT run_id, count(*) FROM calls WHERE {span} AND {column} GROUP BY 1",
                    (low, high)):
                self._run(run_id).extra[column] += count

    @staticmethod
    def _attempts(run: RunStats, history: str) -> None:
        try:
            attempts = json.loads(history)
        except ValueError:
            return
        for attempt in attempts if isinstance(attempts, list) else ():
            if isinstance(attempt, dict):
                run.cooldown_s += float(attempt.get("wait_s") or 0.0)
                run.rate_limited += attempt.get("status") == 429

