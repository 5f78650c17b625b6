"""Provider Batch APIs: the same agents at half the price, submitted, watched and resumed.

``ga.submit_batch(calls)`` sends agent calls through OpenAI's Batch API or Anthropic's Message
Batches instead of one request each; ``job.wait()`` gives back the same
:class:`~greenagents.Result` list an online ``ga.batch`` would, in input order: values validated
against the agent's ``output``, usage, cost at the batch price, one execution-log row per call::

    job = ga.submit_batch([(SentimentAgent, {"text": t}) for t in texts])
    job.id, job.status()             # {'batches': 1, 'pending': 3, 'succeeded': 0, 'failed': 0}
    results = job.wait(progress=True)

How it works:

- **Lines**: each row is the request body an online call would send (the provider's own
  ``build``; structured output as OpenAI ``response_format`` / Anthropic's forced tool), under
  ``custom_id`` = job id + input index. Answers are read by the provider's own ``parse``.
- **Split**: rows are grouped by provider, base URL and model (OpenAI batches hold one model;
  a job mixing providers becomes one batch per group), then cut at the provider's limits
  (OpenAI 50,000 requests / 200 MB per file, Anthropic 100,000 / 256 MB; ``max_rows=`` and
  ``max_bytes=`` lower them). A single row over the byte limit fails alone with an InputError.
- **Failures**: re-asks cannot happen inside a batch. Rows that error retryably (5xx, 429),
  expire, or answer invalid structured output go into a follow-up batch — invalid answers with
  the re-ask messages an online call would add — up to the agent's retry count.
  ``fallback="online"`` then runs whatever is still failing online (fallback models included).
  Fallback models are not used inside batches.
- **Crash safety**: the job and each batch's progress are in SQLite (the tracking database, or
  ``.greenagents/runs.db``) before each step is taken; ``submit_batch(..., job_id=same)`` in a new
  process reattaches and submits nothing twice (a create interrupted before its id was recorded is
  found again by listing the provider's batches). Other input under the same id is refused,
  naming both hashes.
- **Polling**: one request per unfinished batch per interval, the interval growing ×1.5 from
  ``poll_interval`` to ``max_poll_interval``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import gevent

from . import tracking
from .agent import Agent
from .batchrows import BatchRow, fingerprint, prepare, resubmissions
from .batchstore import PartRecord, Store
from .config import settings
from .errors import BatchCancelled, ConfigError, InputError, ProviderError
from .providers.batch import BatchApi, BatchState, Row, batch_api
from .result import Result
from .retry import call_with_retries, policy_for
from .runtime import batch as run_online
from .structured import InvalidOutput, OutputSpec

__all__ = ["Job", "submit_batch"]

Call = tuple[type[Agent], Mapping[str, Any]]
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DEFAULT_DB = ".greenagents/runs.db"


class Job:
    """Calls submitted through provider Batch APIs; see :func:`submit_batch`."""

    def __init__(self, job_id: str, rows: list[BatchRow], store: Store, *, max_rows: int | None,
                 max_bytes: int | None, fallback: str | None, poll_interval: float,
                 max_poll_interval: float) -> None:
        self.id = job_id
        self.rows = rows
        self.store = store
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.fallback = fallback
        self.poll_interval, self.max_poll_interval = poll_interval, max_poll_interval
        self.started = time.time()
        self.cancelled = False
        self.parts: list[PartRecord] = []
        self._apis: dict[tuple[str, str, str], BatchApi] = {}

    def __repr__(self) -> str:
        return f"<Job {self.id} rows={len(self.rows)} batches={len(self.parts)}>"

    # ------------------------------------------------------------------------ planning

    def _api(self, row: BatchRow) -> BatchApi:
        api = self._apis.get(row.group)
        if api is None:
            assert row.endpoint is not None
            api = self._apis[row.group] = batch_api(row.endpoint)
        return api

    def _custom_id(self, index: int, round_: int) -> str:
        return f"{self.id}-{index}" + (f"-r{round_}" if round_ else "")

    def _line(self, row: BatchRow, round_: int) -> bytes:
        assert row.endpoint is not None
        spec = row.agent._output_spec()
        reask = OutputSpec.reask(row.error) if isinstance(row.error, InvalidOutput) else []
        request = row.endpoint.provider.build(
            row.endpoint.model, row.messages + reask, schema=spec.schema, schema_name=spec.name,
            temperature=row.agent.temperature, max_tokens=row.agent.max_tokens)
        line = self._api(row).line(self._custom_id(row.index, round_), request.body)
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    def _plan(self, indexes: list[int], round_: int) -> list[tuple[int, list[int]]]:
        """Cut ``indexes`` into provider batches: one group per endpoint, within the limits."""
        groups: dict[tuple[str, str, str], list[int]] = {}
        for index in indexes:
            groups.setdefault(self.rows[index].group, []).append(index)
        parts: list[tuple[int, list[int]]] = []
        for members in groups.values():
            api = self._api(self.rows[members[0]])
            max_rows = min(self.max_rows or api.max_rows, api.max_rows)
            max_bytes = min(self.max_bytes or api.max_bytes, api.max_bytes)
            current: list[int] = []
            size = 0
            for index in members:
                length = len(self._line(self.rows[index], round_))
                if length > max_bytes:
                    row = self.rows[index]
                    row.error, row.done = InputError(
                        f"input {index} makes a {length:,}-byte batch request, over the limit of "
                        f"{max_bytes:,} bytes per batch; shorten it or run it online"), True
                    continue
                if current and (len(current) >= max_rows or size + length > max_bytes):
                    parts.append((round_, current))
                    current, size = [], 0
                current.append(index)
                size += length
            if current:
                parts.append((round_, current))
        return parts

    # ------------------------------------------------------------------------ submitting

    def _control(self, fn: Any) -> Any:
        """A control request, retried like a call (5xx, 429, connection failures)."""
        return call_with_retries(fn, policy_for(None))

    def _cancel(self, part: PartRecord) -> None:
        api, batch_id = self._api(self.rows[part.indexes[0]]), part.batch_id
        assert batch_id is not None
        self._control(lambda: api.cancel(batch_id))

    def _state(self, part: PartRecord) -> BatchState:
        api, batch_id = self._api(self.rows[part.indexes[0]]), part.batch_id
        assert batch_id is not None
        state: BatchState = self._control(lambda: api.state(batch_id))
        return state

    def _submit(self, part: PartRecord, *, resumed: bool) -> None:
        """Take ``part`` from wherever it stopped to submitted, recording each step first."""
        rows = [self.rows[i] for i in part.indexes]
        api = self._api(rows[0])
        lines = [self._line(row, part.round) for row in rows]
        if part.state == "planned":
            file_id = self._control(lambda: api.upload(lines))
            self.store.update(part, file_id=file_id, state="creating", since=time.time())
        elif resumed and part.state == "creating":
            taken = {p.batch_id for p in self.parts if p.batch_id is not None}
            found = self._control(lambda: api.find(part.file_id, len(lines), part.since or 0,
                                                   taken))
            if found is not None:
                self.store.update(part, batch_id=found, state="submitted")
                return
        label = {"greenagents_job": self.id, "part": str(part.part)}
        batch_id = self._control(lambda: api.create(lines, part.file_id, label))
        self.store.update(part, batch_id=batch_id, state="submitted")

    def _submit_pending(self, *, resumed: bool = False) -> None:
        for part in self.parts:
            if part.state in ("planned", "creating") and not self.cancelled:
                self._submit(part, resumed=resumed)

    # ------------------------------------------------------------------------ collecting

    def _collect(self, part: PartRecord, state: BatchState | None = None) -> None:
        """Apply an ended batch's rows (``state``: what the last poll said) to the job's rows."""
        rows = {self._custom_id(i, part.round): self.rows[i] for i in part.indexes}
        api = self._api(next(iter(rows.values())))
        batch_id = part.batch_id
        failure: str | None = None
        answered: list[Row] = []
        if batch_id is not None:  # None: cancelled before it was submitted
            failure = (state or self._state(part)).failure
            answered = [] if failure else self._control(
                lambda: list(api.results(batch_id)))
        now = time.time()
        for answer in answered:
            row = rows.pop(answer.custom_id, None)
            if row is not None:
                row.apply(answer.completion, answer.error, now)
        for row in rows.values():  # absent from the results: the batch failed or was cancelled
            name = api.provider.name
            error: ProviderError = ProviderError(f"{name} rejected the batch: {failure}",
                                                 provider=name) if failure else \
                BatchCancelled(f"{name}: the batch was cancelled before this row ran",
                               provider=name)
            row.apply(None, error, now)
        if part.state != "collected":
            self.store.update(part, state="collected")

    def _next_round(self) -> bool:
        """Plan and submit a follow-up batch for rows worth another try; False if none."""
        if self.cancelled:
            return False
        round_ = max((p.round for p in self.parts), default=0) + 1
        again = [r.index for r in self.rows
                 if r.worth_retrying and len(r.history) <= resubmissions(r.agent)]
        if not again:
            return False
        self.parts += self.store.add_parts(self.id, self._plan(again, round_))
        self._submit_pending()
        return True

    # ------------------------------------------------------------------------ public

    def status(self) -> dict[str, int]:
        """Rows by state, from the providers' counts (one request per unfinished batch):
        ``batches``, ``pending``, ``succeeded``, ``failed``."""
        counts = {"batches": len(self.parts), "pending": 0, "succeeded": 0, "failed": 0}
        for part in self.parts:
            if part.state == "submitted":
                state = self._state(part)
                counts["succeeded"] += state.counts["succeeded"]
                counts["failed"] += state.counts["failed"]
                counts["pending"] += len(part.indexes) - state.counts["succeeded"] - \
                    state.counts["failed"]
            elif part.state != "collected":
                counts["pending"] += len(part.indexes)
        latest = {i for p in self.parts if p.state != "collected" for i in p.indexes}
        for row in self.rows:
            if row.index not in latest and (row.history or row.done):
                counts["succeeded" if row.error is None else "failed"] += 1
        return counts

    def wait(self, *, progress: bool = False) -> list[Result[Any]]:
        """Poll until every batch has ended (resubmitting failed rows as the retry policy
        allows), then the Results in input order. Detach with Ctrl-C: the job stays resumable."""
        bar = _Bar(len(self.rows), progress)
        interval = self.poll_interval
        try:
            while True:
                pending = [p for p in self.parts if p.state != "collected"]
                if not pending and not self._next_round():
                    break
                moved = 0
                for part in [p for p in self.parts if p.state == "submitted"]:
                    state = self._state(part)
                    if not state.ended:
                        moved += state.counts["succeeded"] + state.counts["failed"]
                    else:
                        self._collect(part, state)
                        interval = self.poll_interval
                bar.show(sum(r.done for r in self.rows) + moved)
                if any(p.state != "collected" for p in self.parts):
                    gevent.sleep(interval)
                    interval = min(interval * 1.5, self.max_poll_interval)
        finally:
            bar.close()
        return self._results()

    def cancel(self) -> None:
        """Cancel every unfinished batch; ``wait()`` then returns what ran (the rest as
        :class:`~greenagents.errors.BatchCancelled`)."""
        self.cancelled = True
        self.store.set_state(self.id, "cancelled")
        for part in self.parts:
            if part.state == "submitted":
                self._cancel(part)
            elif part.state in ("planned", "creating"):
                self.store.update(part, state="collected")
                for index in part.indexes:
                    self.rows[index].apply(None, BatchCancelled(
                        "the job was cancelled before this row was submitted"), time.time())

    def _results(self) -> list[Result[Any]]:
        failing = [r for r in self.rows if r.worth_retrying]
        if self.fallback == "online" and failing and not self.cancelled:
            online = run_online([(r.agent, dict(r.inputs)) for r in failing])
            for row, result in zip(failing, online, strict=True):
                row.value, row.error, row.done, row.online = (result.value, result.error,
                                                              result.ok, result)
        results = [row.result(self.started) for row in self.rows]
        tracking.flush(timeout=30)
        self.store.set_state(self.id, "cancelled" if self.cancelled else "done")
        return results

class _Bar:
    """A tqdm bar fed with the providers' counts (only when asked for)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.tqdm: Any = None
        if enabled:
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, desc="batch", unit="call", dynamic_ncols=True)

    def show(self, done: int) -> None:
        if self.tqdm is not None:
            self.tqdm.n = min(done, self.tqdm.total)
            self.tqdm.refresh()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()


def submit_batch(calls: Iterable[Call], *, job_id: str | None = None, db: str | None = None,
                 input_hash: str | None = None, note: Any = None, max_rows: int | None = None,
                 max_bytes: int | None = None, fallback: str | None = None,
                 poll_interval: float = 5.0, max_poll_interval: float = 60.0) -> Job:
    """Submit ``(AgentClass, inputs)`` calls through the providers' Batch APIs; a :class:`Job`.

    ``job_id`` names the job (letters, digits, ``-``, ``_``); submitting again under an id whose
    job is in the database reattaches to it instead (after a crash: nothing is sent twice), and
    refuses input whose hash differs. ``db`` is the SQLite file (default: the tracking database,
    else ``.greenagents/runs.db``). ``fallback="online"`` runs rows still failing after the
    resubmissions online. Bad input or configuration raises here, before anything is sent.

    >>> import tempfile
    >>> from greenagents.testing import Simulator
    >>> class Echo(Agent):
    ...     model = "openai/gpt-4o-mini"
    ...     def prompt(self, text: str) -> str:
    ...         return text
    >>> with Simulator() as sim:
    ...     Echo.base_url = sim.base_url
    ...     job = submit_batch([(Echo, {"text": "hi"})], db=f"{tempfile.mkdtemp()}/runs.db",
    ...                        poll_interval=0.05)
    ...     [r.value.endswith('You said: "hi".') for r in job.wait()]
    [True]
    """
    if fallback not in (None, "online"):
        raise ConfigError(f"fallback={fallback!r}: use None or 'online'")
    calls = list(calls)
    job_id = job_id or "ga" + uuid.uuid4().hex[:16]
    if not _JOB_ID.match(job_id):
        raise ConfigError(f"job_id={job_id!r}: use 1-40 letters, digits, '-' or '_' (it goes "
                          "into every custom_id)")
    rows = [prepare(index, call) for index, call in enumerate(calls)]
    digest = input_hash or fingerprint(calls)
    store = Store(tracking.database_path(db or settings().tracking or DEFAULT_DB))
    job = Job(job_id, rows, store, max_rows=max_rows, max_bytes=max_bytes, fallback=fallback,
              poll_interval=poll_interval, max_poll_interval=max_poll_interval)
    existing = store.job(job_id)
    if existing is not None:
        if existing.input_hash != digest:
            raise InputError(f"job {job_id} was submitted from input with sha256 "
                             f"{existing.input_hash[:16]}…, but this input's sha256 is "
                             f"{digest[:16]}…: the input changed since. Restore it to resume, or "
                             "start a new job")
        job.started, job.cancelled = existing.created, existing.state == "cancelled"
        job.parts = store.parts(job_id)
        for part in job.parts:  # rebuild what earlier processes learned, in round order
            if part.state == "collected":
                job._collect(part)
        placed = {i for p in job.parts for i in p.indexes}
        job._plan([r.index for r in rows if not r.done and r.index not in placed], 0)  # too big
        job._submit_pending(resumed=True)
        return job
    parts = job._plan([r.index for r in rows if not r.done], 0)
    store.create_job(job_id, digest, len(rows), note=note, parts=parts)
    job.parts = store.parts(job_id)
    job._submit_pending()
    return job
