"""Where batch jobs live between processes: two tables beside the execution log.

A job is written here *before* anything is sent to a provider, and every step of a part (one
provider batch) is recorded as soon as the provider answers it: planned → creating (file
uploaded, creation started, at ``since``) → submitted (batch id known) → collected. That is
what lets ``--resume`` reattach after a SIGKILL and submit nothing twice.

Writes are few (a handful per provider batch) and small, so they go straight to SQLite; WAL
mode lets ``greenagents stats`` and the tracking writer share the file.

>>> import os, tempfile
>>> store = Store(os.path.join(tempfile.mkdtemp(), "runs.db"))
>>> store.create_job("j1", "abc", 2, note=None, parts=[(0, [0, 1])])
>>> store.parts("j1")[0].state, store.job("j1").input_hash
('planned', 'abc')
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["JobRecord", "PartRecord", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,         -- unix time the job was recorded
    input_hash TEXT NOT NULL,      -- sha256 of the input (file bytes, or the calls)
    rows INTEGER NOT NULL,
    state TEXT NOT NULL,           -- running, cancelled, done
    note TEXT                      -- JSON the caller keeps with the job (the CLI: its lines)
);
CREATE TABLE IF NOT EXISTS batch_parts (
    job_id TEXT NOT NULL,
    part INTEGER NOT NULL,
    round INTEGER NOT NULL,        -- 0: first submission; n: n-th resubmission of failed rows
    indexes TEXT NOT NULL,         -- JSON list of the job's input indexes in this batch
    state TEXT NOT NULL,           -- planned, creating, submitted, collected
    file_id TEXT,                  -- OpenAI input file
    batch_id TEXT,                 -- the provider's batch id
    since REAL,                    -- when creation started (finds a batch created unheard)
    PRIMARY KEY (job_id, part)
);
"""


@dataclass(frozen=True)
class JobRecord:
    id: str
    created: float
    input_hash: str
    rows: int
    state: str
    note: Any


@dataclass
class PartRecord:
    job_id: str
    part: int
    round: int
    indexes: list[int]
    state: str
    file_id: str | None = None
    batch_id: str | None = None
    since: float | None = None


class Store:
    """The batch tables of one SQLite file (created on first use)."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            with connection:  # one transaction, committed on success
                yield connection
        finally:
            connection.close()

    def job(self, job_id: str) -> JobRecord | None:
        with self._db() as db:
            row = db.execute("SELECT id, created, input_hash, rows, state, note FROM batch_jobs "
                             "WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        note = json.loads(row[5]) if row[5] else None
        return JobRecord(row[0], row[1], row[2], row[3], row[4], note)

    def create_job(self, job_id: str, input_hash: str, rows: int, *, note: Any,
                   parts: list[tuple[int, list[int]]]) -> None:
        """Record the job and its first parts in one transaction."""
        with self._db() as db:
            db.execute("INSERT INTO batch_jobs VALUES (?, ?, ?, ?, 'running', ?)",
                       (job_id, time.time(), input_hash, rows,
                        None if note is None else json.dumps(note)))
            self._insert(db, job_id, parts, first=0)

    def add_parts(self, job_id: str, parts: list[tuple[int, list[int]]]) -> list[PartRecord]:
        with self._db() as db:
            first = db.execute("SELECT coalesce(max(part) + 1, 0) FROM batch_parts "
                               "WHERE job_id = ?", (job_id,)).fetchone()[0]
            self._insert(db, job_id, parts, first=first)
        return [p for p in self.parts(job_id) if p.part >= first]

    @staticmethod
    def _insert(db: sqlite3.Connection, job_id: str, parts: list[tuple[int, list[int]]],
                first: int) -> None:
        db.executemany("INSERT INTO batch_parts (job_id, part, round, indexes, state) "
                       "VALUES (?, ?, ?, ?, 'planned')",
                       [(job_id, first + n, rnd, json.dumps(indexes))
                        for n, (rnd, indexes) in enumerate(parts)])

    def parts(self, job_id: str) -> list[PartRecord]:
        with self._db() as db:
            rows = db.execute("SELECT job_id, part, round, indexes, state, file_id, batch_id, "
                              "since FROM batch_parts WHERE job_id = ? ORDER BY round, part",
                              (job_id,)).fetchall()
        return [PartRecord(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in rows]

    def update(self, part: PartRecord, **fields: Any) -> None:
        """Change and persist fields of ``part`` (state, file_id, batch_id, since)."""
        for name, value in fields.items():
            setattr(part, name, value)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._db() as db:
            db.execute(f"UPDATE batch_parts SET {assignments} WHERE job_id = ? AND part = ?",
                       (*fields.values(), part.job_id, part.part))

    def set_state(self, job_id: str, state: str) -> None:
        with self._db() as db:
            db.execute("UPDATE batch_jobs SET state = ? WHERE id = ?", (state, job_id))

    def delete(self, job_id: str) -> None:
        """Forget a job (a fresh run reusing its id)."""
        with self._db() as db:
            db.execute("DELETE FROM batch_parts WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM batch_jobs WHERE id = ?", (job_id,))
