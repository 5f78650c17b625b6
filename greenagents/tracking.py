"""The execution log: one SQLite row per call, written off the hot path by a single writer.

Turn it on with ``ga.configure(tracking="sqlite:///runs.db")`` (or ``GREENAGENTS_TRACKING``);
every :meth:`Agent.call <greenagents.Agent.call>` then records its :class:`~greenagents.Result`
— agent, model, status, attempts, latency, tokens, cost, error, per-attempt history — and
``greenagents stats`` summarises the file. Inputs and outputs — a tool call's arguments and output
included — are kept only with ``tracking_payloads=True``; API keys never (error text is passed
through ``errors.redact``, tool arguments and outputs are redacted when recorded).

>>> import os, tempfile
>>> import greenagents as ga
>>> db = os.path.join(tempfile.mkdtemp(), "runs.db")
>>> _ = ga.configure(tracking=f"sqlite:///{db}")
>>> record(ga.Result(target="demo.echo", value="hi", duration_s=0.5))
>>> flush()
True
>>> summary(db)[0]["calls"]
1
>>> _ = ga.configure(tracking=None)

Why a queue and one writer: :func:`record` only appends to a queue, so a thousand concurrent
calls never wait on each other or on the disk. The writer drains the queue in batches, one
transaction each, on one connection (SQLite in WAL mode, so ``stats`` can read meanwhile).

Pitfall: ``sqlite3`` is a blocking C call that gevent cannot interrupt — a 0.8 s write on the hub
stalls *every* greenlet for 0.8 s. In a monkey-patched process the writer is a greenlet that hands
each batch to gevent's thread pool; in an unpatched one it is a real daemon thread. Rows still
queued at interpreter exit are written by an ``atexit`` :func:`flush`.

Each :class:`~greenagents.Client` has its own writers (:class:`Writers`, its part of
:mod:`greenagents.state`) and its own ``tracking`` setting, so two tenants log to two files;
closing a client writes its queued rows and stops its writers.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import math
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from . import pricing, runs, state
from .config import settings
from .errors import BudgetExceeded, ConfigError, redact
from .jsonl import dumps, encode
from .patching import available
from .result import Result

__all__ = ["RUN_ID", "TrackingWarning", "database_path", "failures", "flush", "record", "summary"]

#: Identifies this process's calls made outside any batch; each batch and each
#: ``greenagents run`` has its own id (see :mod:`greenagents.runs`).
RUN_ID = runs.PROCESS_RUN_ID

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,              -- unix time the call finished
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,           -- Result.target: qualified name of the agent or callable
    model TEXT,
    status TEXT NOT NULL,          -- 'ok' or 'error'
    attempts INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    error_class TEXT,
    error_message TEXT,
    history TEXT NOT NULL,         -- JSON list of attempts (number, turn, model, status, error, ...)
                                   -- and tool calls (turn, tool, arguments, output, error, ...)
    inputs TEXT,                   -- JSON, only with tracking_payloads=True
    output TEXT,                   -- JSON, only with tracking_payloads=True
    input_index INTEGER,           -- the input's position in its run (its line for `run`)
    cached INTEGER NOT NULL DEFAULT 0,  -- 1: answered by the response cache (cost_usd 0)
    saved_usd REAL,                -- a cached answer's original cost, not paid again
    budget_stopped INTEGER NOT NULL DEFAULT 0  -- 1: not sent, a max_cost_usd budget was spent
);
CREATE INDEX IF NOT EXISTS calls_ts ON calls (ts);
-- the dashboard's filters: one run's calls, one error type's (measured in README § Dashboard)
CREATE INDEX IF NOT EXISTS calls_run ON calls (run_id);
CREATE INDEX IF NOT EXISTS calls_error ON calls (error_class, run_id) WHERE error_class IS NOT NULL;
"""
# Columns newer than the first schema, with their definitions: added to older logs when first
# opened for writing (and read as NULL from a log opened read-only).
_ADDED = {"input_index": "INTEGER", "cached": "INTEGER NOT NULL DEFAULT 0", "saved_usd": "REAL",
          "budget_stopped": "INTEGER NOT NULL DEFAULT 0"}
_COLUMNS = ("ts", "run_id", "agent", "model", "status", "attempts", "duration_s", "prompt_tokens",
            "completion_tokens", "cost_usd", "error_class", "error_message", "history", "inputs",
            "output", "input_index", "cached", "saved_usd", "budget_stopped")
INSERT_ROW = f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_BATCH = 2000  # rows per transaction: big enough to amortise the commit, small enough to interleave
_EXIT_FLUSH_S = 10.0


class TrackingWarning(RuntimeWarning):
    """The execution log could not be written; the calls themselves were not affected."""


def database_path(url: str) -> str:
    """The file behind a tracking URL: ``sqlite:///rel.db``, ``sqlite:////abs.db`` or a plain path.

    >>> database_path("sqlite:////tmp/runs.db")
    '/tmp/runs.db'
    """
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    if "://" in url:
        raise ConfigError(f"tracking={url!r}: only SQLite is supported; use "
                          "'sqlite:///path/to/runs.db' (or tracking=None to turn it off)")
    return url


def connect(path: str) -> sqlite3.Connection:
    """Open (creating if need be) the log; usable from whichever pool thread runs a batch."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
    connection.executescript(_SCHEMA)
    present = {row[1] for row in connection.execute("PRAGMA table_info(calls)")}
    for column, kind in _ADDED.items():
        if column not in present:
            connection.execute(f"ALTER TABLE calls ADD COLUMN {column} {kind}")
    return connection


def _text(value: str | None) -> str | None:
    """``value`` as SQLite can store it: a lone surrogate becomes its escape (``\\ud83d``)."""
    return None if value is None else encode(value).decode()


def _row(result: Result[Any], inputs: Mapping[str, Any] | None, payloads: bool,
         index: int | None) -> tuple[Any, ...]:
    error = result.error
    usage = result.usage
    return (time.time(), runs.current_run_id(), _text(result.target or "?"), _text(result.model),
            "ok" if error is None else "error", result.attempts, result.duration_s,
            usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
            result.cost_usd, None if error is None else type(error).__name__,
            None if error is None else _text(redact(str(error))), _text(dumps(_history(result, payloads))),
            _text(redact(dumps(inputs))) if payloads and inputs is not None else None,
            _text(redact(dumps(result.value))) if payloads and error is None else None,
            runs.input_index.get() if index is None else index,
            int(result.cached),
            pricing.saved_usd(result),
            int(isinstance(error, BudgetExceeded)))


def _history(result: Result[Any], payloads: bool) -> list[dict[str, Any]]:
    """The attempts and tool calls; a tool call's arguments and output only with payloads."""
    entries = [dataclasses.asdict(entry) for entry in result.history]
    if not payloads:
        for entry in entries:
            if "tool" in entry:
                entry["arguments"] = entry["output"] = None
    return entries


class _Writer:
    """One database's queue and the single writer (greenlet or thread) that empties it.

    The queue holds row tuples and, from :func:`flush`, events: an event is set once every row
    queued before it is committed, which is all ``flush`` needs to wait for.
    """

    def __init__(self, path: str):
        self.path = path
        self.queue: collections.deque[tuple[Any, ...] | threading.Event] = collections.deque()
        # Patched: gevent's Event and a greenlet "thread"; unpatched: the real ones.
        self.wake = threading.Event()
        self.green = available()
        self.connection: sqlite3.Connection | None = None
        self.failed = False
        self.warned = False
        self.stopped = False
        threading.Thread(target=self._loop, name=f"greenagents-tracking:{path}", daemon=True).start()

    def put(self, item: tuple[Any, ...] | threading.Event) -> None:
        self.queue.append(item)  # deque.append is atomic: safe from any greenlet or thread
        self.wake.set()

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.queue:
                rows: list[tuple[Any, ...]] = []
                done: list[threading.Event] = []
                while self.queue and len(rows) < _BATCH:
                    item = self.queue.popleft()
                    if isinstance(item, threading.Event):
                        done.append(item)
                    else:
                        rows.append(item)
                if rows:
                    try:
                        self._blocking(self._write, rows)
                    except Exception as exc:  # the writer must outlive any batch
                        self._warn_once(f"a batch of {len(rows)} rows failed ({exc!r})")
                for event in done:
                    event.set()
            if self.stopped:  # after the queue is empty: what was recorded before stop is written
                if self.connection is not None:
                    self.connection.close()
                return

    def stop(self) -> None:
        """End the writer once the rows already queued are written."""
        self.stopped = True
        self.wake.set()

    def _blocking(self, fn: Callable[[list[tuple[Any, ...]]], None],
                  rows: list[tuple[Any, ...]]) -> None:
        """Run ``fn(rows)`` where a blocking C call cannot stall the event loop."""
        if self.green:
            import gevent

            gevent.get_hub().threadpool.apply(fn, (rows,))
        else:
            fn(rows)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        if self.failed:
            return
        try:
            if self.connection is None:
                self.connection = connect(self.path)
        except (sqlite3.Error, OSError) as exc:
            self.failed = True  # warn once, not once per batch; the calls are unaffected
            warnings.warn(f"greenagents tracking: cannot write {self.path} ({exc}); calls are no "
                          "longer recorded. Fix the path or set tracking=None.", TrackingWarning,
                          stacklevel=1)
            return
        try:
            with self.connection:
                self.connection.executemany(INSERT_ROW, rows)
        except Exception:  # some row the database refused: keep the others
            for row in rows:
                try:
                    with self.connection:
                        self.connection.execute(INSERT_ROW, row)
                except Exception as exc:
                    self._warn_once(f"a row of {row[2]!r} was refused ({exc})")

    def _warn_once(self, what: str) -> None:
        """Say once per database that rows were lost; later rows are still written."""
        if not self.warned:
            self.warned = True
            warnings.warn(f"greenagents tracking: {what} writing {self.path}; it was skipped and "
                          "logging goes on (this warning is not repeated)", TrackingWarning,
                          stacklevel=1)


class Writers:
    """One client's writers, one per database file, each started on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: dict[str, _Writer] = {}

    def get(self, url: str) -> _Writer:
        path = os.path.abspath(database_path(url))
        writer = self.by_path.get(path)
        if writer is None:
            with self.lock:
                writer = self.by_path.get(path) or self.by_path.setdefault(path, _Writer(path))
        return writer

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row queued so far is written; False if ``timeout`` passed first."""
        pending = []
        for writer in list(self.by_path.values()):
            marker = threading.Event()
            writer.put(marker)
            pending.append(marker)
        deadline = None if timeout is None else time.monotonic() + timeout
        for marker in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not marker.wait(left):
                return False
        return True

    def close(self) -> None:
        """Write what is queued (waiting at most as long as at exit), then stop the writers."""
        self.flush(_EXIT_FLUSH_S)
        with self.lock:
            writers = list(self.by_path.values())
            self.by_path.clear()
        for writer in writers:
            writer.stop()


def _writer(url: str) -> _Writer:
    """The current client's writer of ``url``'s database (one per file per client)."""
    return state.current().part(Writers).get(url)


def record(result: Result[Any], inputs: Mapping[str, Any] | None = None, *,
           index: int | None = None) -> None:
    """Queue ``result`` for the log, if tracking is on; cheap and safe from any greenlet or thread.

    ``inputs`` (the call's keyword arguments) are stored, with the output, only when
    ``tracking_payloads`` is on. The run id and input index come from the caller's run
    (:mod:`greenagents.runs`); ``index`` overrides the latter.
    """
    current = settings()
    if current.tracking is None:
        return
    writer = _writer(current.tracking)
    try:
        row = _row(result, inputs, current.tracking_payloads, index)
    except Exception as exc:  # a value whose str() fails: lose its row, never the call
        writer._warn_once(f"a row of {result.target!r} could not be built ({exc!r})")
        return
    writer.put(row)


def flush(timeout: float | None = None) -> bool:
    """Wait until every row recorded so far is written; False if ``timeout`` passed first.

    Every client's rows, not only the current one's. Runs at interpreter exit too; call it
    yourself before reading the log in the same process.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for owner in state.live():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not owner.part(Writers).flush(left):
            return False
    return True


atexit.register(flush, _EXIT_FLUSH_S)


def _unreadable(path: str, exc: sqlite3.Error) -> str:
    """Why ``path`` cannot be summarised, and what to do, in one line."""
    if "no such table" in str(exc):
        with open(path, "rb") as head:
            wal_mode = head.read(20)[18:19] == b"\x02"  # the header's "write version" byte
        wal = f"{path}-wal"  # reading may have created an empty one
        if wal_mode and not (os.path.exists(wal) and os.path.getsize(wal)):
            return (f"{path} has no calls table in its main file and its {os.path.basename(path)}"
                    "-wal file is not beside it (the log's latest writes live there): copy both "
                    "files together, or run stats on the original")
        return (f"{path} is a SQLite file without a calls table, not a greenagents execution log; "
                "point --db at the runs.db greenagents wrote (.greenagents/runs.db by default)")
    return (f"cannot read {path} as an execution log ({exc}); point --db at the runs.db "
            "greenagents wrote (.greenagents/runs.db by default)")


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _read(db: str) -> sqlite3.Connection:
    path = database_path(db)
    if not os.path.exists(path):
        raise ConfigError(f"no execution log at {path}; run with tracking on first")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        connection.text_factory = _lenient_text  # a row another tool wrote must not stop it
        present = {row[1] for row in connection.execute("PRAGMA table_info(calls)")}
    except sqlite3.Error as exc:
        raise ConfigError(_unreadable(path, exc)) from None
    if not present:
        connection.close()
        raise ConfigError(_unreadable(path, sqlite3.OperationalError("no such table: calls")))
    missing = [column for column in _ADDED if column not in present]  # an older log
    if missing:  # one view adds every missing column as NULL
        nulls = ", ".join(f"NULL AS {column}" for column in missing)
        connection.execute(f"CREATE TEMP VIEW calls AS SELECT *, {nulls} FROM main.calls")
    return connection


def _where(since: float | None, run: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    args: list[Any] = []
    if since is not None:
        clauses.append("ts >= ?")
        args.append(since)
    if run is not None:
        clauses.append("run_id = ?")
        args.append(run)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


#: Durations are grouped in buckets 1% wide (log scale): p50/p95 come from the buckets' counts,
#: exact to within 0.5%, so the whole log is summarised in one GROUP BY.
_BUCKETS_PER_E = 100


def _bucket(seconds: float | None) -> int:
    return round(math.log(max(seconds or 0.0, 1e-6)) * _BUCKETS_PER_E)


def summary(db: str, *, since: float | None = None, by: str = "agent", run: str | None = None,
            top_errors: int = 5) -> list[dict[str, Any]]:
    """Per-``by`` (``"agent"``, ``"model"`` or ``"run"``) totals of the calls logged in ``db``,
    busiest first.

    Each entry has ``key``, ``calls``, ``ok``, ``success_rate``, ``p50_s``, ``p95_s`` (within
    0.5%), ``prompt_tokens``, ``completion_tokens``, ``cost_usd``, ``cached`` (cache hits),
    ``saved_usd`` (what those hits cost when first paid), ``budget_stopped`` (calls a budget kept
    from being sent) and ``errors`` (the ``top_errors`` most frequent ``(count, "Class:
    message")``). ``since`` is a unix time, ``run``
    a run id. SQLite does the aggregation (``GROUP BY`` agent and duration bucket; its sorter
    spills to disk), so a log of millions of rows is summarised in constant memory. It reads a
    snapshot, so it can run while a writer is busy.
    """
    column = {"agent": "agent", "model": "model", "run": "run_id"}.get(by)
    if column is None:
        raise ConfigError(f"summary(by={by!r}): group by 'agent', 'model' or 'run'")
    key = f"coalesce({column}, '?')"
    where, args = _where(since, run)
    connection = _read(db)
    connection.create_function("bucket", 1, _bucket, deterministic=True)
    try:
        buckets = connection.execute(
            f"SELECT {key} AS k, bucket(duration_s) AS b, count(*), sum(status = 'ok'), "
            "sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), sum(cached), "
            f"sum(saved_usd), sum(budget_stopped) FROM calls{where} "
            "GROUP BY k, b ORDER BY k, b", args).fetchall()
        top = connection.execute(
            f"SELECT k, n, text FROM (SELECT {key} AS k, count(*) AS n, "
            "coalesce(error_class, '?') || ': ' || coalesce(error_message, '') AS text, "
            f"row_number() OVER (PARTITION BY {key} ORDER BY count(*) DESC) AS rank "
            f"FROM calls{where}{' AND' if where else ' WHERE'} status != 'ok' "
            "GROUP BY k, error_class, error_message) WHERE rank <= ?",
            (*args, top_errors)).fetchall()
    finally:
        connection.close()
    groups: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
    for row in buckets:  # a few hundred rows per group at most, whatever the log's size
        groups[row[0]].append(row[1:])
    errors: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for group, count, text in top:
        errors[group].append((count, text))
    totals = [_totals(group, rows, sorted(errors[group], key=lambda e: -e[0]))
              for group, rows in groups.items()]
    return sorted(totals, key=lambda entry: (-entry["calls"], entry["key"]))


def _totals(key: str, buckets: list[tuple[Any, ...]],
            errors: list[tuple[int, str]]) -> dict[str, Any]:
    """One group's entry from its duration buckets ``(bucket, calls, ok, prompt, completion,
    cost, cached, saved, budget_stopped)``, in bucket order."""
    calls = sum(b[1] for b in buckets)
    ok = sum(b[2] for b in buckets)
    costs = [b[5] for b in buckets if b[5] is not None]
    return {"key": key, "calls": calls, "ok": ok, "success_rate": ok / calls,
            "p50_s": _percentile(buckets, calls, 0.50), "p95_s": _percentile(buckets, calls, 0.95),
            "prompt_tokens": sum(b[3] or 0 for b in buckets),
            "completion_tokens": sum(b[4] or 0 for b in buckets),
            "cost_usd": sum(costs) if costs else None,
            "cached": sum(b[6] or 0 for b in buckets),
            "saved_usd": sum(b[7] or 0.0 for b in buckets),
            "budget_stopped": sum(b[8] or 0 for b in buckets), "errors": errors}


def _percentile(buckets: list[tuple[Any, ...]], calls: int, fraction: float) -> float:
    """The nearest-rank percentile: the middle of the bucket holding that rank."""
    rank, seen = max(math.ceil(fraction * calls), 1), 0
    for bucket, count, *_ in buckets:
        seen += count
        if seen >= rank:
            return round(math.exp(bucket / _BUCKETS_PER_E), 6)
    return 0.0


def failures(db: str, *, since: float | None = None, run: str | None = None,
             limit: int | None = 50) -> list[dict[str, Any]]:
    """The failed calls logged in ``db``, newest first, with their whole error message and the
    run and input index they came from (``greenagents stats --errors``)."""
    where, args = _where(since, run)
    connection = _read(db)
    try:
        rows = connection.execute(
            f"SELECT ts, run_id, input_index, agent, model, attempts, error_class, error_message "
            f"FROM calls{where}{' AND' if where else ' WHERE'} status != 'ok' "
            "ORDER BY ts DESC, id DESC LIMIT ?", (*args, -1 if limit is None else limit)).fetchall()
    finally:
        connection.close()
    names = ("ts", "run_id", "input_index", "agent", "model", "attempts", "error_class",
             "error_message")
    return [dict(zip(names, row, strict=True)) for row in rows]
