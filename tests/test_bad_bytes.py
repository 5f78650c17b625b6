"""Lone surrogates, NaN and infinity on every path a value is written: JSONL, SQLite, Celery, stats.

A lone surrogate (``"\\ud83d"``, half an emoji) is legal JSON but cannot be encoded as UTF-8;
before, one such answer stopped ``greenagents run`` for good and silently killed the tracking
writer. Now it is written as its JSON escape, and NaN/infinity as ``null``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import textwrap
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest
from kombu.serialization import dumps as kombu_dumps
from kombu.serialization import loads as kombu_loads

import greenagents as ga
from greenagents import jsonl, tracking
from greenagents.celery import wire

from .test_cli_run import cli, read_rows, write_lines
from .test_hostile_answers import hostile  # noqa: F401  # the fixture

HALF = chr(0xD83D)  # half an emoji

WEIRD = """
    def weird(n: int):
        if n == 1:
            raise ValueError("bad \\ud83d byte")
        return {"text": "half \\ud83d emoji", "score": float("nan"), "top": float("inf")}
"""


def test_run_writes_and_resumes_rows_with_surrogates_and_nan(tmp_path: Path) -> None:
    """Before: UnicodeEncodeError in jsonl.py after 0 rows, and --resume died on it forever."""
    (tmp_path / "fns.py").write_text(textwrap.dedent(WEIRD))
    write_lines(tmp_path / "in.jsonl", [{"n": n} for n in range(3)])
    proc = cli("run", "fns:weird", "--input", "in.jsonl", "--output", "out.jsonl", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # row 1 failed, by design
    rows = {row["index"]: row for row in read_rows(tmp_path / "out.jsonl")}
    assert sorted(rows) == [0, 1, 2]
    assert rows[0]["value"] == {"text": f"half {HALF} emoji", "score": None, "top": None}
    assert rows[1]["error"] == f"ValueError: bad {HALF} byte"
    (tmp_path / "out.jsonl").read_bytes().decode("utf-8")  # valid UTF-8, standard JSON
    write_lines(tmp_path / "in.jsonl", [{"n": n} for n in range(4)])
    proc = cli("run", "fns:weird", "--input", "in.jsonl", "--output", "out.jsonl", "--resume",
               cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert sorted(row["index"] for row in read_rows(tmp_path / "out.jsonl")) == [0, 1, 2, 3]


def test_an_agent_answer_with_a_lone_surrogate_is_kept(hostile: str) -> None:  # noqa: F811
    class Echo(ga.Agent):
        base_url = f"{hostile}/answer/{quote(chr(92) + 'ud83d and more')}"

    result = Echo.call("hi")
    assert result.ok, result.error
    assert result.value == f"{HALF} and more"


def test_the_tracking_writer_survives_bad_rows_and_keeps_logging(tmp_path: Path) -> None:
    """Before: the writer thread died on the first such row and logged nothing more, silently."""
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracking.record(ga.Result(target=f"a{HALF}", value=HALF, error=ValueError(HALF)))
        tracking.record(ga.Result(target="unstorable", cost_usd=object()))  # type: ignore[arg-type]
        tracking.record(ga.Result(target="unstorable2", cost_usd=object()))  # type: ignore[arg-type]
        for n in range(3):
            tracking.record(ga.Result(target=f"fine{n}", value=n))
        assert tracking.flush(timeout=30)
    ga.configure(tracking=None)
    stored = [row[0] for row in sqlite3.connect(db).execute("SELECT agent FROM calls ORDER BY id")]
    assert stored == ["a\\ud83d", "fine0", "fine1", "fine2"]
    said = [w for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(said) == 1 and "skipped and logging goes on" in str(said[0].message)


def test_celery_json_carries_surrogates_and_nan_as_standard_json() -> None:
    sent = ga.Result(index=2, target="m.f", value={"t": HALF, "x": float("nan")},
                     error=None)
    content_type, encoding, data = kombu_dumps(wire.to_json(sent), serializer="json")
    json.loads(data, parse_constant=pytest.fail)  # no NaN/Infinity tokens: standard JSON
    data.encode("utf-8")  # what the broker stores
    back = wire.from_json(kombu_loads(data, content_type, encoding))
    assert back.value == {"t": HALF, "x": None}
    failed = wire.from_json(json.loads(json.dumps(wire.to_json(
        ga.Result(error=ValueError(f"bad {HALF}"))))))
    assert str(failed.error) == f"bad {HALF}"


def test_stats_reads_a_log_holding_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """Before: sqlite3.OperationalError 'Could not decode to UTF-8 column' as a traceback."""
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    tracking.record(ga.Result(target="fine", error=ValueError("x")))
    assert tracking.flush(timeout=30)
    ga.configure(tracking=None)
    with sqlite3.connect(db) as connection:  # another tool wrote Latin-1 into the log
        connection.execute("UPDATE calls SET error_message = CAST(x'636166e9' AS TEXT)")
    proc = cli("stats", "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ValueError: caf\ufffd" in proc.stdout


def test_dumps_keeps_the_fast_path_exact() -> None:
    assert jsonl.dumps({"a": 1.5, "b": [math.pi]}) == json.dumps(
        {"a": 1.5, "b": [math.pi]}, separators=(",", ":"))
