"""Read-only access to the execution log: the filtered, paginated table of calls, one call, exports.

The file is opened with SQLite's ``mode=ro`` URI, so the dashboard can never write to a log a run
is appending to (WAL mode lets it read a consistent snapshot meanwhile). Columns are looked up at
open: a column a newer greenagents adds (an input index, cache hits) shows when present and is
simply absent otherwise, so an older log still opens.

Pages are keyset-paginated (``id < before``), never ``OFFSET``: page 2,000 of a million-call log
costs what page 1 does. A text search (``LIKE``) must scan, so it is cut off after
:data:`SEARCH_BUDGET_S` and says how far it got rather than making the page slow.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, redact
from ..tracking import database_path

__all__ = ["SEARCH_BUDGET_S", "CallFilter", "Page", "Store"]

SEARCH_BUDGET_S = 0.15
PAGE_SIZE = 50
#: The calls-table columns, in display order; ``tokens`` is computed.
TABLE_COLUMNS = ("id", "ts", "run_id", "agent", "model", "status", "attempts", "duration_s",
                 "prompt_tokens", "completion_tokens", "cost_usd", "error_class", "error_message")
_SEARCHED = ("error_message", "inputs", "output", "agent", "model")


@dataclass(frozen=True)
class CallFilter:
    """What the calls table shows: every field optional, all of them ANDed."""

    run: str = ""
    status: str = ""        # "ok" or "error"
    model: str = ""
    agent: str = ""
    error: str = ""         # error class
    q: str = ""             # text anywhere in the error, inputs, output, agent or model

    @classmethod
    def of(cls, params: Mapping[str, str]) -> CallFilter:
        return cls(**{name: params.get(name, "").strip() for name in cls.__dataclass_fields__})

    def params(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items() if value}


@dataclass
class Page:
    """One page of calls, newest first; ``before`` is the cursor of the next (older) page."""

    rows: list[dict[str, Any]]
    before: int | None
    searched_all: bool = True
    extra_columns: list[str] = field(default_factory=list)


class Store:
    """The log at ``db`` opened read-only; one connection per thread (gevent: per greenlet hub)."""

    def __init__(self, db: str):
        self.path = os.path.abspath(database_path(db))
        if not os.path.exists(self.path):
            raise ConfigError(f"no execution log at {self.path}; run with tracking on first "
                              "(greenagents run writes .greenagents/runs.db beside its output)")
        self._local = threading.local()
        self.columns = frozenset(row[1] for row in self.connect().execute("PRAGMA table_info(calls)"))
        if not {"id", "run_id", "status"} <= self.columns:
            raise ConfigError(f"{self.path} is not a greenagents execution log (no calls table)")

    def connect(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                         check_same_thread=False)
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
        return connection

    def has(self, column: str) -> bool:
        return column in self.columns

    def _where(self, where: CallFilter) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for column, value in (("run_id", where.run), ("status", where.status),
                              ("model", where.model), ("agent", where.agent),
                              ("error_class", where.error)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if where.q:
            searched = [column for column in _SEARCHED if self.has(column)]
            clauses.append("(" + " OR ".join(f"instr({c}, ?) > 0" for c in searched) + ")")
            args.extend([where.q] * len(searched))
        return (" AND ".join(clauses) or "1"), args

    def _selected(self) -> list[str]:
        extra = sorted(self.columns - set(TABLE_COLUMNS) - {"history", "inputs", "output"})
        return [c for c in TABLE_COLUMNS if self.has(c)] + extra

    def page(self, where: CallFilter, before: int | None = None, size: int = PAGE_SIZE) -> Page:
        """The ``size`` newest calls matching ``where`` older than id ``before``."""
        condition, args = self._where(where)
        if before is not None:
            condition += " AND id < ?"
            args.append(before)
        columns = self._selected()
        sql = (f"SELECT {', '.join(columns)} FROM calls WHERE {condition} "
               f"ORDER BY id DESC LIMIT {size + 1}")
        rows, complete = self._bounded(sql, args, SEARCH_BUDGET_S if where.q else None)
        more = len(rows) > size
        rows = rows[:size]
        cursor = rows[-1]["id"] if rows and (more or not complete) else None
        return Page([_redacted_row(row) for row in rows], cursor, complete,
                    [c for c in columns if c not in TABLE_COLUMNS])

    def _bounded(self, sql: str, args: list[Any], budget: float | None) -> tuple[list[Any], bool]:
        """Run ``sql``; with a ``budget``, stop after that many seconds keeping what was found."""
        connection = self.connect()
        if budget is None:
            return connection.execute(sql, args).fetchall(), True
        deadline = time.monotonic() + budget
        rows: list[Any] = []
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cursor = connection.execute(sql, args)
            while True:
                row = cursor.fetchone()
                if row is None:
                    return rows, True
                rows.append(row)
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            return rows, False
        finally:
            connection.set_progress_handler(None, 0)

    def export(self, where: CallFilter) -> Iterator[dict[str, Any]]:
        """Every call matching ``where``, newest first, streamed (payload columns included)."""
        condition, args = self._where(where)
        columns = self._selected() + [c for c in ("inputs", "output") if self.has(c)]
        cursor = self.connect().execute(
            f"SELECT {', '.join(columns)} FROM calls WHERE {condition} ORDER BY id DESC", args)
        for row in cursor:
            yield _redacted_row(row)

    def call(self, call_id: int) -> dict[str, Any] | None:
        """One call, every column, secrets redacted again (logs written before redaction existed)."""
        row = self.connect().execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else _redacted_row(row)

    def failed_inputs(self, run: str) -> Iterator[tuple[str, str]]:
        """``(agent, inputs JSON)`` of each failed call of ``run`` whose inputs were logged."""
        if not self.has("inputs"):
            return iter(())
        cursor = self.connect().execute(
            "SELECT agent, inputs FROM calls WHERE run_id = ? AND status != 'ok' "
            "AND inputs IS NOT NULL ORDER BY id", (run,))
        return ((agent, inputs) for agent, inputs in cursor)


def _redacted_row(row: sqlite3.Row) -> dict[str, Any]:
    """The row as a dict, API keys masked (a log written before redaction may hold them)."""
    blank: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)  # columns an older log lacks show empty
    return blank | {key: redact(value) if isinstance(value, str) else value
                    for key, value in zip(row.keys(), row, strict=True)}
