"""The green runtime: order, errors, bounds, timeouts, deadlines, cancellation, contextvars."""

from __future__ import annotations

import contextvars
import gc
import time
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import pytest

import greenagents as ga
from greenagents import errors, slots

from .conftest import run_python


def test_results_come_back_in_input_order_with_targets() -> None:
    def slow_echo(x: int) -> int:
        time.sleep((10 - x) * 0.01)  # later inputs finish first
        return x

    results = ga.batch([(slow_echo, {"x": i}) for i in range(10)])
    assert [r.index for r in results] == list(range(10))
    assert [r.value for r in results] == list(range(10))
    assert all(r.ok and r.target.endswith("slow_echo") for r in results)


def test_each_accepts_args_and_positional_forms() -> None:
    results = ga.batch([(divmod, (7, 2), {}), (pow, {"base": 2, "exp": 3})])
    assert [r.unwrap() for r in results] == [(3, 1), 8]
    assert [r.value for r in ga.each("abc", str.upper)] == ["A", "B", "C"]


def test_one_failure_never_sinks_the_batch(capsys: pytest.CaptureFixture[str]) -> None:
    def maybe(i: int) -> int:
        if i % 2:
            raise ValueError(f"odd {i}")
        return i

    results = ga.each(range(1000), maybe, max_concurrent=100)
    assert len(results) == 1000
    assert sum(r.ok for r in results) == 500
    assert isinstance(results[1].error, ValueError)
    with pytest.raises(ValueError, match="odd 1"):
        results[1].unwrap()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "failed with" not in captured.err


def test_malformed_call_in_a_lazy_iterable_is_that_items_error() -> None:
    calls = iter([(abs, (-1,), {}), "not a call", (abs, (-3,), {})])
    results = ga.batch(calls, warn_failures=False)  # type: ignore[arg-type]
    assert results[0].value == 1 and results[2].value == 3
    assert isinstance(results[1].error, errors.InputError)
    assert "(fn, kwargs)" in str(results[1].error)


def test_concurrency_by_structure_200_sleeps_of_1s() -> None:
    start = time.monotonic()
    results = ga.each(range(200), lambda i: time.sleep(1) or i, max_concurrent=200)
    assert all(r.ok for r in results)
    assert time.monotonic() - start < 10  # sequential would be 200 s


class Peak:
    """A call that counts how many of its kind run at once."""

    def __init__(self) -> None:
        self.running = self.peak = 0

    def __call__(self, _: object) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        gevent.sleep(0.01)
        self.running -= 1


def test_never_more_than_max_concurrent_running() -> None:
    work = Peak()
    ga.each(range(300), work, max_concurrent=7)
    assert work.peak == 7


def test_default_bound_comes_from_settings_and_env() -> None:
    ga.configure(max_concurrency=3)
    work = Peak()
    ga.each(range(30), work)
    assert work.peak == 3
    out = run_python("""
        import os; os.environ["GREENAGENTS_MAX_CONCURRENCY"] = "42"
        import greenagents as ga; print(ga.settings().max_concurrency)
    """)
    assert out.stdout.strip() == "42"


def test_bad_settings_name_the_fix() -> None:
    with pytest.raises(errors.ConfigError, match="known settings"):
        ga.configure(max_concurency=3)
    with pytest.raises(errors.ConfigError, match="max_concurrency"):
        ga.configure(max_concurrency=0)
    with pytest.raises(errors.ConfigError, match="max_concurrent"):
        ga.batch([], max_concurrent=0)


def test_timeout_bounds_each_call_and_is_that_items_error() -> None:
    results = ga.each([0.0, 5.0], time.sleep, timeout=0.2)
    assert results[0].ok
    assert isinstance(results[1].error, errors.Timeout)
    assert "timeout=0.2" in str(results[1].error)


def test_a_calls_own_gevent_timeout_is_its_error_not_ours() -> None:
    def own_timeout() -> None:
        with gevent.Timeout(0.01):
            gevent.sleep(1)

    (result,) = ga.batch([(own_timeout, {})], timeout=5)
    assert isinstance(result.error, gevent.Timeout)


def test_deadline_times_out_running_and_unstarted_calls() -> None:
    start = time.monotonic()
    results = ga.each([0.0, 0.0, 10.0, 10.0, 10.0], time.sleep, deadline=0.3, max_concurrent=1)
    assert time.monotonic() - start < 3
    assert [r.ok for r in results] == [True, True, False, False, False]
    assert "before this call finished" in str(results[2].error)
    assert "before this call started" in str(results[4].error)


def test_stream_yields_in_completion_order() -> None:
    calls = [(time.sleep, (d,), {}) for d in (0.3, 0.1, 0.2)]
    assert [r.index for r in ga.stream(calls)] == [1, 2, 0]


def test_stream_consumes_a_huge_generator_lazily() -> None:
    produced = 0

    def calls() -> Iterator[tuple[object, tuple[int], dict[str, object]]]:
        nonlocal produced
        for i in range(1_000_000):
            produced += 1
            yield (abs, (i,), {})

    for seen, _ in enumerate(ga.stream(calls(), max_concurrent=5), 1):
        if seen == 1000:
            break
    assert produced < 1000 + 5 * 2 + 1  # started at most one window ahead


def test_a_slow_iterable_does_not_hold_back_finished_results() -> None:
    first_out = gevent.event.Event()
    released: list[bool] = []

    def calls() -> Iterator[tuple[object, tuple[float], dict[str, object]]]:
        yield (time.sleep, (0.01,), {})
        released.append(first_out.wait(timeout=5))  # the next call only once Result 0 is out
        yield (time.sleep, (0.01,), {})

    seen = []
    for result in ga.stream(calls(), max_concurrent=4):
        seen.append(result.index)
        first_out.set()
    assert seen == [0, 1] and released == [True]


def test_a_slow_iterable_without_patching_does_not_hold_back_results() -> None:
    out = run_python("""
        import threading, time, warnings
        import greenagents as ga
        warnings.simplefilter("ignore")
        first_out = threading.Event()
        released = []
        def calls():
            yield (time.sleep, (0.01,), {})
            released.append(first_out.wait(timeout=5))
            yield (time.sleep, (0.01,), {})
        seen = []
        for result in ga.stream(calls(), max_concurrent=4):
            seen.append(result.index)
            first_out.set()
        print(seen, released)
    """)
    assert out.stdout.strip() == "[0, 1] [True]", out.stderr


def test_an_iterable_that_fails_stops_the_run_with_its_error() -> None:
    def calls() -> Iterator[tuple[object, tuple[float], dict[str, object]]]:
        yield (time.sleep, (0.01,), {})
        raise LookupError("the queue went away")

    with pytest.raises(LookupError, match="went away"):
        ga.batch(calls())


def test_deadline_while_the_iterable_is_slow_times_out_what_it_gives() -> None:
    def calls() -> Iterator[tuple[object, tuple[float], dict[str, object]]]:
        yield (time.sleep, (0.0,), {})
        gevent.sleep(0.5)  # still producing when the deadline passes
        yield (time.sleep, (0.0,), {})
        yield (time.sleep, (0.0,), {})

    results = ga.batch(calls(), deadline=0.2)
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].ok and not results[1].ok and not results[2].ok
    assert "before this call started" in str(results[2].error)


def test_stream_memory_is_flat_in_length() -> None:
    import tracemalloc

    def peak_for(n: int) -> int:
        gc.collect()
        tracemalloc.start()
        count = sum(1 for _ in ga.stream(((abs, (i,), {}) for i in range(n)), max_concurrent=50))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == n
        return peak

    small, large = peak_for(2_000), peak_for(40_000)
    assert large < small * 3  # 20x the calls, not 20x the memory


def test_on_result_exception_kills_outstanding_calls() -> None:
    finished: list[int] = []

    def work(i: int) -> None:
        gevent.sleep(0 if i == 0 else 5)
        finished.append(i)

    def explode(result: ga.Result[object]) -> None:
        raise RuntimeError("stop")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        ga.batch([(work, (i,), {}) for i in range(50)], on_result=explode, max_concurrent=50)
    assert time.monotonic() - start < 2
    gevent.sleep(0.1)
    assert finished == [0]


def test_breaking_out_of_stream_stops_the_rest() -> None:
    finished: list[int] = []

    def work(i: int) -> None:
        gevent.sleep(0.05 if i == 0 else 2)
        finished.append(i)

    source = ga.stream([(work, (i,), {}) for i in range(10)], max_concurrent=10)
    for _ in source:
        break
    source.close()  # type: ignore[attr-defined]
    gevent.sleep(0.1)
    assert finished == [0]


def test_contextvars_of_the_caller_reach_the_call() -> None:
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")
    tenant.set("acme")
    results = ga.each(range(5), lambda _: tenant.get())
    assert {r.value for r in results} == {"acme"}
    assert ga.spawn(tenant.get).get() == "acme"


def test_calls_do_not_leak_context_changes_to_each_other() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)

    def bump(i: int) -> int:
        var.set(var.get() + i)
        gevent.sleep(0.01)
        return var.get()

    assert [r.value for r in ga.each(range(5), bump)] == [0, 1, 2, 3, 4]
    assert var.get() == 0


def test_nested_batches_do_not_deadlock() -> None:
    def inner(i: int) -> int:
        return sum(r.unwrap() for r in ga.each(range(i), lambda x: x, max_concurrent=2))

    results = ga.each(range(10), inner, max_concurrent=2)
    assert [r.value for r in results] == [sum(range(i)) for i in range(10)]


def test_sleeping_call_gives_its_slot_away() -> None:
    def backs_off(_: int) -> str:
        slots.sleep(1.0)
        return "slept"

    finished_at: dict[str, float] = {}
    start = time.monotonic()

    def quick(_: int) -> str:
        finished_at["quick"] = time.monotonic() - start
        return "quick"

    calls = [(backs_off, (0,), {}), (backs_off, (1,), {}), (quick, (2,), {})]
    results = ga.batch(calls, max_concurrent=2)
    assert [r.value for r in results] == ["slept", "slept", "quick"]
    assert finished_at["quick"] < 0.5  # ran during the backoff, not after it


def test_in_green_context() -> None:
    assert not ga.in_green_context()
    assert ga.spawn(ga.in_green_context).get()
    assert ga.each([None], lambda _: ga.in_green_context())[0].value


def test_progress_bar_counts(capsys: pytest.CaptureFixture[str]) -> None:
    ga.each(range(20), abs, progress=True)
    assert "20/20" in capsys.readouterr().err


def test_result_unwrap_and_repr() -> None:
    result = ga.each([1], lambda _: 1 / 0)[0]
    assert not result.ok and "ZeroDivisionError" in repr(result)
    with pytest.raises(ZeroDivisionError):
        result.unwrap()


def test_plain_requests_code_runs_hundreds_at_once(sim_factory: Any) -> None:
    import requests

    sim = sim_factory(latency=1.0)

    def ask(i: int) -> int:
        response = requests.post(f"{sim.base_url}/chat/completions", timeout=30, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]})
        return response.status_code

    start = time.monotonic()
    results = ga.each(range(200), ask, max_concurrent=150)
    assert [r.value for r in results] == [200] * 200
    assert time.monotonic() - start < 20  # one by one: 200 s
    assert 100 < sim.stats()["peak_in_flight"] <= 150
