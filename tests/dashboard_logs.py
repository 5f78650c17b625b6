"""Logs and servers shared by the dashboard's HTTP and browser tests."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gevent.pywsgi import WSGIServer

import greenagents as ga
from greenagents import runs, tracking
from greenagents.dashboard import Dashboard

from .agents import SentimentAgent, at

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
SECRET = "sk-proj-abcdefghijklmnopqrstuvwx"


def real_log(db: Path, sim_url: str, calls: int = 60) -> None:
    """Agent calls against the simulator (some failing, some retried) logged with payloads,
    plus an input error and a call whose every text is markup."""
    ga.configure(tracking=f"sqlite:///{db}", tracking_payloads=True, retries=2)
    agent = at(SentimentAgent, sim_url)
    work: list[Any] = [(agent, {"text": f"review {n}: the kettle works"}) for n in range(calls)]
    work.append((agent, {"text": 42}))  # InputError: fails before any request
    one_run = runs.run_id.set(runs.new_run_id())  # the batch joins it, and so does the record
    try:
        ga.batch(work, max_concurrent=10, warn_failures=False)
        tracking.record(ga.Result(target=f"tests.{XSS}", model=XSS, error=ValueError(XSS),
                                  duration_s=0.25), {"text": XSS})
    finally:
        runs.run_id.reset(one_run)
    assert tracking.flush(timeout=30)
    ga.configure(tracking=None)


def calls(db: Path, where: str = "1", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute(f"SELECT * FROM calls WHERE {where}", args)]
    finally:
        connection.close()


@contextlib.contextmanager
def served(db: Path, token: str | None = None) -> Iterator[str]:
    """The dashboard over ``db`` on a free loopback port, in this (patched) process."""
    app = Dashboard(str(db), token=token)
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.stop(timeout=1)
