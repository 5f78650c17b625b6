"""A chunk of calls in one Celery message (issue 22), run in-process against a real redis-server.

The chunk task runs here (``Task.apply``: Celery's own eager path), storing each call's Result
under the call's key in Redis, exactly as a worker does; the whole-system behaviour (workers
killed, lost messages, batches run again) is in test_celery.py, parametrized over chunk sizes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("celery", reason="the celery extra is not installed: pip install -e '.[celery]'")

import celery  # installed with the celery extra

import greenagents as ga
import greenagents.celery as ga_celery
from greenagents.celery.local import redis_server
from greenagents.celery.store import ResultStore

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="NO REDIS-SERVER ON PATH: install it, as .ci/run does")

ran: list[int] = []


def recorded(n: int) -> int:
    """A call target that notes each run (importable by reference: tests.test_celery_chunks)."""
    ran.append(n)
    return n * n


def odd(n: int) -> dict[str, Any]:
    """A value orjson refuses (a lone surrogate) beside one JSON cannot say (NaN)."""
    return {"t": "\ud83d", "x": float("nan"), "n": n}


@pytest.fixture
def app() -> Iterator[celery.Celery]:
    with redis_server() as url:
        yield ga_celery.app_for(url)


def chunk(keys: range, batch: str = "b") -> list[list[Any]]:
    return [["tests.test_celery_chunks:recorded", [i], {}, i, f"{batch}:{i}"] for i in keys]


def test_a_redelivered_chunk_runs_only_the_calls_without_a_stored_result(app) -> None:
    task = app.tasks[ga_celery.CHUNK_TASK_NAME]
    ran.clear()
    task.apply(args=[chunk(range(2)), None])  # the worker died after storing these two
    task.apply(args=[chunk(range(5)), None])  # the same message, delivered again
    assert sorted(ran) == [0, 1, 2, 3, 4]  # each call ran once
    stored = ResultStore(app.backend).read([f"b:{i}" for i in range(5)])
    results = [ga_celery.from_json(data) for data in stored]  # type: ignore[arg-type]
    assert [(r.index, r.value) for r in results] == [(i, i * i) for i in range(5)]


def test_a_chunk_with_a_target_the_worker_cannot_import_runs_the_others(app) -> None:
    calls = [*chunk(range(2)), ["no_such_module_here:f", [], {}, 2, "b:2"]]
    app.tasks[ga_celery.CHUNK_TASK_NAME].apply(args=[calls, None])
    first, second, missing = (ga_celery.from_json(data) for data in  # type: ignore[arg-type]
                              ResultStore(app.backend).read(["b:0", "b:1", "b:2"]))
    assert first.ok and second.ok and missing.index == 2
    assert isinstance(missing.error, ga.errors.ConfigError)
    assert "no_such_module_here" in str(missing.error)


def test_results_are_written_in_one_pipeline_on_redis(app) -> None:
    store = ResultStore(app.backend)
    assert store.pipelined
    store.write([(f"p:{i}", {"index": i}) for i in range(100)])
    assert store.read(["p:0", "p:99", "p:100"]) == [{"index": 0}, {"index": 99}, None]
    assert app.backend.get_task_meta("p:5")["status"] == "SUCCESS"  # Celery reads it too


def test_a_bad_chunk_size_names_the_fix(app) -> None:
    with pytest.raises(ga.errors.ConfigError, match="chunk_size must be an int >= 1"):
        ga_celery.batch(app, [(divmod, (7, 2), {})], chunk_size=0)


def test_a_chunk_announces_each_result_on_its_inbox_once(app) -> None:
    """The dispatcher reads what workers announce, not every pending key at every poll."""
    task = app.tasks[ga_celery.CHUNK_TASK_NAME]
    task.apply(args=[chunk(range(3)), None, "inbox-1"])
    store = ResultStore(app.backend)
    collected = store.collect("inbox-1", lambda: pytest.fail("Redis needs no key list"))
    assert sorted((key, data["value"]) for key, data in collected) == [
        ("b:0", 0), ("b:1", 1), ("b:2", 4)]
    assert store.collect("inbox-1", list) == []  # emptied by the first collect


def test_a_rerun_chunk_announces_the_results_stored_before(app) -> None:
    """A later run of the batch has a new inbox: what finished earlier must reach it too."""
    task = app.tasks[ga_celery.CHUNK_TASK_NAME]
    ran.clear()
    task.apply(args=[chunk(range(2)), None, "run-1"])
    task.apply(args=[chunk(range(3)), None, "run-2"])
    assert sorted(ran) == [0, 1, 2]  # nothing ran twice
    assert sorted(key for key, _ in ResultStore(app.backend).collect("run-2", list)) == [
        "b:0", "b:1", "b:2"]


def test_a_chunk_marks_itself_started_and_stores_no_count(app) -> None:
    """STARTED tells the dispatcher the message left the queue; the task writes it itself (one
    round trip with the read of stored Results) and Celery writes no SUCCESS meta after it."""
    task = app.tasks[ga_celery.CHUNK_TASK_NAME]
    task.apply(args=[chunk(range(1)), None], task_id="b:0:run")
    meta = app.backend.get_task_meta("b:0:run")
    assert meta["status"] == "STARTED" and meta["result"]["pid"] > 0


def test_results_json_cannot_say_plainly_still_cross_the_store(app) -> None:
    calls = [["tests.test_celery_chunks:odd", [7], {}, 0, "b:0"]]
    app.tasks[ga_celery.CHUNK_TASK_NAME].apply(args=[calls, None, "inbox-1"])
    [(key, data)] = ResultStore(app.backend).collect("inbox-1", list)
    assert (key, ga_celery.from_json(data).value) == ("b:0", {"t": "\ud83d", "x": None, "n": 7})
