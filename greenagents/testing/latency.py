"""How long the simulated model takes: time to first token, then time per output token.

The first-token delay is fixed, or lognormal when a p99 is given — real LLM latencies have a long
right tail, and retry/timeout logic is only exercised by it.

>>> import random
>>> Latency(0.5).first_token(lambda: random.Random(0))
0.5
>>> tail = Latency(1.0, p99=5.0)
>>> draws = sorted(tail.first_token(lambda: random.Random(i)) for i in range(1000))
>>> 0.8 < draws[500] < 1.25 and 3.5 < draws[990] < 7.0
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


class Latency:
    """Delays for one simulator: ``median`` (or fixed) seconds, optional ``p99``, and
    ``per_token`` seconds to generate each output token."""

    def __init__(self, median: float, p99: float | None = None, per_token: float = 0.0) -> None:
        self.median = median
        self.sigma = math.log(p99 / median) / _Z99 if p99 and median > 0 else 0.0
        self.per_token = per_token

    def first_token(self, rng: Callable[[], random.Random]) -> float:
        """Seconds before the first byte of the answer, drawn from ``rng()`` when they vary
        (seeding a generator costs more than the rest of a request's set-up: only then)."""
        if self.sigma == 0.0:
            return self.median
        return rng().lognormvariate(math.log(self.median), self.sigma)
