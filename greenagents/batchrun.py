"""``greenagents run --mode batch|auto``: one input file as one batch job, resumable by output.

The job of a run is named after its output file, so ``--resume`` finds it again; it records the
input file's sha256 and which lines it covers before anything is submitted, and refuses to resume
from a changed file. Results are written when the job has ended, in input order.

``--mode auto`` picks batch when the work is big and nothing is urgent — at least
:data:`AUTO_MIN_ROWS` rows, the target an Agent whose provider has a Batch API, and no
``--deadline`` shorter than the providers' 24-hour batch window — and online otherwise; when it
picks batch, rows still failing after the resubmissions run online (``fallback="online"``).

>>> choose_mode("auto", rows=50_000, deadline=None, batchable=True)
'batch'
>>> choose_mode("auto", rows=50_000, deadline=3600, batchable=True)
'online'
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Any

from .agent import Agent
from .batchjobs import Job, submit_batch
from .batchstore import Store
from .errors import ConfigError, InputError
from .providers.batch import batch_api
from .result import Result

__all__ = ["AUTO_MIN_ROWS", "BATCH_WINDOW_S", "BatchRun", "choose_mode"]

#: Fewer rows than this run online under ``--mode auto``: a batch's latency buys little there.
AUTO_MIN_ROWS = 1_000
#: The providers' completion window: a deadline shorter than this cannot wait for a batch.
BATCH_WINDOW_S = 24 * 3600.0


def choose_mode(mode: str, *, rows: int, deadline: float | None, batchable: bool) -> str:
    """``online`` or ``batch`` for ``--mode`` (``auto`` decided by the rule above)."""
    if mode != "auto":
        return mode
    urgent = deadline is not None and deadline < BATCH_WINDOW_S
    return "batch" if batchable and rows >= AUTO_MIN_ROWS and not urgent else "online"


class BatchRun:
    """The batch job behind one ``--output`` file, in the SQLite file ``db``."""

    def __init__(self, output: str, db: str) -> None:
        self.db = db
        self.job_id = "run-" + hashlib.sha256(os.path.abspath(output).encode()).hexdigest()[:16]
        self.record = Store(db).job(self.job_id)

    @property
    def in_flight(self) -> bool:
        """A job of this output was submitted and has not been written out yet."""
        return self.record is not None and self.record.state != "written"

    def choose(self, mode: str, target: object, *, rows: int, deadline: float | None,
               resume: bool) -> str:
        """The mode this run takes: batch when resuming a job in flight, else
        :func:`choose_mode` (a target without a Batch API is not batchable)."""
        if resume and self.in_flight:
            return "batch"
        try:
            batchable = isinstance(target, type) and issubclass(target, Agent) and \
                bool(batch_api(target._endpoints()[0][1]))
        except ConfigError:
            batchable = False
        return choose_mode(mode, rows=rows, deadline=deadline, batchable=batchable)

    def start(self, target: type[Agent], data: bytes, objects: Iterable[tuple[int, Any]],
              done: set[int], *, resume: bool, **options: Any) -> tuple[Job, list[int]]:
        """Submit (or with ``resume``, reattach to) the job; it and the input lines it covers.

        Raises :class:`~greenagents.errors.InputError` when the input file changed since the job
        was submitted, naming both hashes.
        """
        digest = hashlib.sha256(data).hexdigest()
        valid = {index: obj for index, obj in objects if isinstance(obj, dict)}
        if self.record is not None and resume and self.in_flight:
            if self.record.input_hash != digest:
                raise InputError(f"the input file changed since its batch job was submitted: its "
                                 f"sha256 was {self.record.input_hash}, it is now {digest}; "
                                 "restore it to resume, or run without --resume into a new "
                                 "--output")
            lines = [i for i in self.record.note["lines"] if i in valid]
        else:
            if self.record is not None:  # a finished or abandoned job of this output
                Store(self.db).delete(self.job_id)
            lines = [i for i in sorted(valid) if i not in done]
        job = submit_batch([(target, valid[i]) for i in lines], job_id=self.job_id, db=self.db,
                           input_hash=digest, note={"lines": lines}, **options)
        return job, lines

    def written(self) -> None:
        """Every result is in the output: the job need not be resumed again."""
        Store(self.db).set_state(self.job_id, "written")


def results_by_line(results: list[Result[Any]], lines: list[int]) -> dict[int, Result[Any]]:
    """The job's Results keyed by their input line."""
    return {line: result for line, result in zip(lines, results, strict=True)}
