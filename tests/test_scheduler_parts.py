"""The scheduler's parts on their own (issue 15): backends, the feeder, the run, one call.

``ga.batch`` and friends are tested through their public functions in test_runtime.py; these
tests hold the seams other code builds on (Celery's dispatcher and worker) to their word.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

import greenagents as ga
from greenagents import errors, hooks, runs
from greenagents.backends import EMPTY, Expired, GreenBackend
from greenagents.calls import run_call
from greenagents.feeder import FED_ALL, Fed, Feeder, FeedFailed, unpack_call
from greenagents.run import Run

from .conftest import run_python


def test_run_call_is_one_call_as_a_batch_runs_it() -> None:
    def where(x: int) -> tuple[int | None, str | None]:
        return x * 2, runs.run_id.get(), runs.input_index.get()  # type: ignore[return-value]

    result = run_call(where, (21,), index=7)
    value, run_id, index = result.value  # type: ignore[misc]
    assert result.ok and result.index == 7 and value == 42
    assert run_id and index == 7  # the execution log knows the call's run and input
    assert result.target.endswith("where")
    failed = run_call(int, ["x"])
    assert isinstance(failed.error, ValueError) and failed.index is None
    late = run_call(gevent.sleep, (5,), timeout=0.05)
    assert isinstance(late.error, errors.Timeout) and "timeout=0.05" in str(late.error)


def test_run_call_tells_the_hooks_once_and_runs_agents_through_their_hook(sim: Any) -> None:
    from .agents import SentimentAgent, at

    events: list[Any] = []
    listener = hooks.subscribe(events.append, hooks.CallStarted, hooks.CallEnded)
    try:
        result = run_call(at(SentimentAgent, sim.base_url), kwargs={"text": "great"}, index=3)
    finally:
        hooks.unsubscribe(listener)
    assert result.ok and result.index == 3 and result.usage is not None
    assert [type(e).__name__ for e in events] == ["CallStarted", "CallEnded"]


def test_run_call_unpatched_times_out_in_a_thread() -> None:
    done = run_python("""
        import time, warnings
        from greenagents.calls import run_call
        result = run_call(time.sleep, (5,), timeout=0.2)
        print(type(result.error).__name__, run_call(divmod, (7, 2)).value)
    """)
    assert done.stdout.split() == ["Timeout", "(3,", "1)"], done.stderr


def test_a_run_keeps_the_indices_it_is_given() -> None:
    calls = [(10, (abs, (-1,), {})), (20, "junk"), (30, (divmod, (7, 2), {}))]
    results = {r.index: r for r in Run(concurrency=2, warn=False).results(calls)}
    assert results[10].value == 1 and results[30].value == (3, 1)
    assert isinstance(results[20].error, errors.InputError)


def test_a_run_past_its_deadline_accounts_for_every_input() -> None:
    calls = ((i, (gevent.sleep, (0 if i < 2 else 5,), {})) for i in range(6))
    results = sorted(Run(concurrency=3, deadline=0.5, warn=False).results(calls), key=lambda r: r.index)
    assert [r.index for r in results] == list(range(6))
    assert [r.ok for r in results[:2]] == [True, True]
    assert all(isinstance(r.error, errors.Timeout) for r in results[2:])


def test_the_feeder_reads_at_most_its_window_ahead() -> None:
    taken = 0

    def source() -> Iterator[tuple[int, Any]]:
        nonlocal taken
        for index in itertools.count():
            taken += 1
            yield index, index

    backend = GreenBackend()
    events = backend.queue()
    feeder = Feeder(source(), backend, events, window=3)
    gevent.sleep(0.05)
    assert taken == 3  # and no more, until one is taken
    assert backend.get(events, 1) == Fed(0, 0)
    feeder.taken()
    gevent.sleep(0.05)
    assert taken == 4
    feeder.stop()


def test_the_feeder_reports_the_end_and_the_iterables_failure() -> None:
    def failing() -> Iterator[tuple[int, Any]]:
        yield 0, "a"
        raise OSError("pipe closed")

    backend = GreenBackend()
    events = backend.queue()
    Feeder(enumerate(["only"]), backend, events, window=5)
    assert [backend.get(events, 1), backend.get(events, 1)] == [Fed(0, "only"), FED_ALL]
    Feeder(failing(), backend, events, window=5)
    assert backend.get(events, 1) == Fed(0, "a")
    failed = backend.get(events, 1)
    assert isinstance(failed, FeedFailed) and isinstance(failed.error, OSError)
    assert backend.get(events, 0.01) is EMPTY


def test_unpack_call_names_the_shapes() -> None:
    assert unpack_call(0, (divmod, {"a": 1})) == (divmod, (), {"a": 1})
    with pytest.raises(errors.InputError, match=r"\(fn, kwargs\) or \(fn, args, kwargs\)"):
        unpack_call(3, (divmod, "not kwargs"))


def test_the_green_backend_tells_its_timeout_from_the_calls_own() -> None:
    backend = GreenBackend()
    with pytest.raises(Expired):
        backend.within(lambda: gevent.sleep(5), 0.05)
    own = gevent.Timeout(0.01)

    def with_own_timer() -> None:
        with own:
            gevent.sleep(5)

    with pytest.raises(gevent.Timeout) as raised:
        backend.within(with_own_timer, 5)
    assert raised.value is own


def test_a_run_never_runs_more_than_its_limit_at_once() -> None:
    running = 0
    most = 0

    def hold() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        time.sleep(0.02)
        running -= 1

    results = list(Run(concurrency=4, warn=False).results((i, (hold, {})) for i in range(40)))
    assert len(results) == 40 and most == 4  # WINDOW × 4 started ahead: parked, not running


def test_ga_batch_still_warns_from_the_callers_line() -> None:
    with pytest.warns(ga.CallsFailedWarning) as warned:
        ga.batch([(int, ("x",), {})])
    assert warned[0].filename == __file__
