"""A synthetic execution log of any size, written through the tracking module's own schema and
INSERT, for the dashboard's tests and benchmark (a million real calls would take minutes).

Rows look like a real run's: three agents on two models, lognormal latencies, ~4% failures of a
few kinds (some after retries with backoff), tokens and costs, and payloads when asked.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Iterator
from typing import Any

from .. import tracking

__all__ = ["write_log"]

_AGENTS = ("app.agents.SentimentAgent", "app.agents.SummaryAgent", "app.agents.CategoryAgent")
_MODELS = ("openai/gpt-4o-mini", "anthropic/claude-haiku-4-5")
_ERRORS = (("RateLimited", "429 Too Many Requests: retry after 2s (openai/gpt-4o-mini)", 429),
           ("ServerError", "500 Internal Server Error from openai/gpt-4o-mini", 500),
           ("OutputError", "the answer did not validate against Sentiment: label: Input should "
                           "be 'positive', 'negative' or 'neutral'", None),
           ("CallTimeout", "no answer within 30.0s; raise timeout=", None))


def _rows(run_id: str, calls: int, start: float, rate: float, rng: random.Random,
          payloads: bool) -> Iterator[tuple[Any, ...]]:
    for n in range(calls):
        agent, model = _AGENTS[n % 3], _MODELS[(n // 3) % 2]
        duration = min(rng.lognormvariate(math.log(1.0), 0.45), 60.0)
        failed = rng.random() < 0.04
        retries = 1 if rng.random() < 0.06 or failed else 0
        error = _ERRORS[rng.randrange(len(_ERRORS))] if failed else None
        history = [{"number": k + 1, "model": model, "status": 429 if k < retries else
                    (error[2] if error else None), "error": "RateLimited" if k < retries else
                    (error[0] if error else None), "duration_s": round(duration / (retries + 1), 3),
                    "wait_s": 1.5 if k < retries else 0.0} for k in range(retries + 1)]
        prompt, completion = 40 + n % 120, 12 + n % 30
        text = f"review {n}: the kettle arrived today and it is excellent."
        yield (start + n / rate + duration, run_id, agent, model, "error" if error else "ok",
               retries + 1, duration, prompt, completion,
               (prompt * 0.15 + completion * 0.6) / 1e6, error and error[0], error and error[1],
               json.dumps(history), json.dumps({"text": text}) if payloads else None,
               json.dumps({"label": "positive", "confidence": 0.9})
               if payloads and not error else None, n,
               0, None, 0)  # cached, saved_usd, budget_stopped


def write_log(path: str, runs: dict[str, int], *, rate: float = 300.0, payloads: bool = False,
              seed: int = 0, end: float | None = None) -> None:
    """Append ``runs`` (run id → calls) to the log at ``path``, each run ``rate`` calls/s,
    one after the other, the last finishing around ``end`` (default: an hour ago).
    """
    rng = random.Random(seed)
    connection = tracking.connect(path)
    total_s = sum(runs.values()) / rate
    start = (end if end is not None else time.time() - 3600) - total_s
    try:
        for run_id, calls in runs.items():
            rows = _rows(run_id, calls, start, rate, rng, payloads)
            while batch := list(itertools.islice(rows, 20_000)):
                with connection:
                    connection.executemany(tracking.INSERT_ROW, batch)
            start += calls / rate
    finally:
        connection.close()
