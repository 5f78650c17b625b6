"""How many calls go in one Celery message: adaptive to the batch and to the workers' ``-c``.

One message per call costs a few ms of CPU in Celery itself (publish, reserve, STARTED, the
result write, the acknowledgement), which capped two workers at ~160 calls/s on 2 cores where the
same machine runs ~1,000 calls/s locally. A message carries a *chunk* of calls instead, run at
once by the worker that takes it, each Result still stored under its own key.

What a message still costs (~3 ms of worker CPU and ~1 ms of dispatcher CPU, measured with
trivial calls: Redis reads and writes of the broker's bookkeeping, kombu's decoding, Celery's
tracing) is a call's CPU several times over (~0.5 ms for a structured agent call), so a message
carries a few hundred calls where the batch allows: the size aims at ``PER_WORKER`` messages per
worker — enough that a faster worker takes more of them — of at most ``MAX`` calls. A worker
runs up to ``-c`` messages at once, so a chunk of ``k`` calls makes up to ``-c × k`` calls in
flight on it; the size below keeps that at about the batch's share of that worker.

>>> size_for(2000, [250, 250]), size_for(30, [5, 5]), size_for(10, []), size_for(None, [250])
(250, 4, 3, 16)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from greenagents import errors

__all__ = ["LAZY", "MAX", "PER_WORKER", "check", "size_for", "worker_slots"]

PER_WORKER = 4  # messages per worker a batch aims at: enough to share calls out evenly
MAX = 250  # calls in one message at most: ~4 ms of Celery's CPU over 250 calls is ~3% of theirs
LAZY = 16  # the chunk of an iterable of unknown length (sent early whenever it pauses)


def size_for(batch_size: int | None, slots: Sequence[int]) -> int:
    """Calls per message for a batch of ``batch_size`` calls (None: unknown) over workers whose
    concurrencies (``-c``) are ``slots`` (empty: none answered; then as one worker)."""
    if batch_size is None:
        return LAZY
    messages = sum(min(slot, PER_WORKER) for slot in slots) or PER_WORKER
    return max(1, min(MAX, math.ceil(batch_size / messages)))


def worker_slots(app: Any, timeout: float = 0.3) -> list[int]:
    """The ``-c`` of each worker that answers within ``timeout`` seconds (a broadcast)."""
    stats = app.control.inspect(timeout=timeout).stats() or {}
    return [int(info.get("pool", {}).get("max-concurrency") or 1) for info in stats.values()]


def check(chunk_size: int | None) -> int | None:
    """``chunk_size`` as given, if it is None or an int >= 1; a ConfigError naming the fix."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise errors.ConfigError(f"chunk_size must be an int >= 1 (calls per Celery message) or "
                                 f"None (sized to the batch and the workers), got {chunk_size!r}")
    return chunk_size
