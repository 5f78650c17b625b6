"""The simulator's knobs, validated once and shared by the Python API, the CLI and the server.

>>> SimOptions(latency=0.2, faults={"rate_limit": 0.3}, fault_attempts=1).to_args()[:4]
['--host', '127.0.0.1', '--port', '0']
>>> SimOptions(faults={"boom": 1.0})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown fault 'boom'; valid faults: rate_limit, server_error, overloaded, reset, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from greenagents.testing.faults import check_rates

#: Environment variable carrying the API key to the CLI, so it never appears in ``ps`` output.
API_KEY_ENV = "GREENAGENTS_SIM_API_KEY"
#: Names ``GET /v1/models`` lists; any model name is accepted on completion requests.
MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "claude-sonnet-4-5",
                           "sim-model")


@dataclass
class SimOptions:
    """Behaviour of one simulator. Read when the server starts; later changes have no effect.

    - ``latency``: seconds to the first token (the median when ``latency_p99`` is set, making the
      delay lognormal); ``token_latency``: extra seconds per output token.
    - ``faults``: fault name → probability (see ``greenagents.testing.faults.FAULTS``);
      ``fault_attempts``: only the first K tries of a request (same model and conversation) can
      fail (None: every try rolls independently); ``retry_after``: seconds announced by the
      ``rate_limit`` fault.
    - ``rpm``/``tpm``: per-API-key budgets answered with 429 and an exact ``Retry-After``, and
      stated on every answer in the provider's rate-limit headers; ``rate_window``: the seconds
      they count over (60: per minute; shorter makes the reset quick to test).
    - ``api_key``: when set, requests must carry it (never logged or echoed).
    - ``seed``: makes answers and fault rolls reproducible.
    - ``answer_words``: plain-text answers run to this many words (stream deltas; each paced by
      ``token_latency``): long answers to stream.
    - ``batch_*``: the Batch APIs (see :mod:`greenagents.testing.batches`): ``batch_delay``
      seconds until a batch ends, shares of rows that fail / expire, limits per batch (None: the
      providers' own), and ``batch_create_latency``.
    """

    latency: float = 0.0
    latency_p99: float | None = None
    token_latency: float = 0.0
    faults: Mapping[str, float] = field(default_factory=dict)
    fault_attempts: int | None = None
    retry_after: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    rate_window: float = 60.0
    api_key: str | None = field(default=None, repr=False)
    seed: int = 0
    answer_words: int | None = None
    host: str = "127.0.0.1"
    port: int = 0
    batch_delay: float = 0.0
    batch_row_failure: float = 0.0
    batch_row_expiry: float = 0.0
    batch_max_rows: int | None = None
    batch_max_bytes: int | None = None
    batch_create_latency: float = 0.0

    def __post_init__(self) -> None:
        self.faults = dict(self.faults)
        check_rates(self.faults)
        for name in ("latency", "token_latency", "retry_after", "batch_delay",
                     "batch_create_latency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.rate_window <= 0:
            raise ValueError(f"rate_window must be > 0 seconds, got {self.rate_window}")
        if self.latency_p99 is not None and not 0 < self.latency <= self.latency_p99:
            raise ValueError("latency_p99 needs 0 < latency (the median) <= latency_p99, "
                             f"got latency={self.latency}, latency_p99={self.latency_p99}")
        if not 0 <= self.batch_row_failure + self.batch_row_expiry <= 1 or \
                min(self.batch_row_failure, self.batch_row_expiry) < 0:
            raise ValueError("batch_row_failure and batch_row_expiry are shares of rows: each >= "
                             "0, together <= 1")
        for name in ("fault_attempts", "rpm", "tpm", "answer_words", "batch_max_rows", "batch_max_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {value}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 (any free port) to 65535, got {self.port}")

    def to_args(self) -> list[str]:
        """The ``greenagents sim`` flags for these options, except the API key (passed through
        the environment so it never shows in a process list)."""
        args = ["--host", self.host, "--port", str(self.port), "--latency", str(self.latency),
                "--token-latency", str(self.token_latency), "--retry-after", str(self.retry_after),
                "--rate-window", str(self.rate_window),
                "--seed", str(self.seed), "--batch-delay", str(self.batch_delay),
                "--batch-row-failure", str(self.batch_row_failure),
                "--batch-row-expiry", str(self.batch_row_expiry),
                "--batch-create-latency", str(self.batch_create_latency)]
        optional = {"--latency-p99": self.latency_p99, "--fault-attempts": self.fault_attempts,
                    "--rpm": self.rpm, "--tpm": self.tpm, "--answer-words": self.answer_words,
                    "--batch-max-rows": self.batch_max_rows, "--batch-max-bytes": self.batch_max_bytes}
        for flag, value in optional.items():
            if value is not None:
                args += [flag, str(value)]
        for name, rate in self.faults.items():
            args += ["--fault", f"{name}={rate}"]
        return args
