"""Circuit breakers against the simulator's faults: open, fallbacks at once, half-open probe, close."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import gevent
import pytest

import greenagents as ga
from greenagents import limits
from greenagents.errors import CircuitOpen, ServerError
from greenagents.testing import Simulator

from .agents import SentimentAgent, at


def requests(sim: Simulator) -> int:
    return int(sim.stats()["requests"])


@pytest.mark.sim(faults={"server_error": 1.0})
def test_an_open_breaker_sends_calls_to_the_fallback_at_once(
        sim: Simulator, sim_factory: Callable[..., Simulator]) -> None:
    healthy = sim_factory()
    ga.configure(breaker_failures=3, retries=2)
    agent = at(SentimentAgent, sim.base_url, fallbacks=(("openai/gpt-4o", healthy.base_url),))
    results = [agent.call(text=f"t{n}") for n in range(10)]
    assert all(r.ok and r.model == "openai/gpt-4o" for r in results)
    assert requests(sim) == 3  # the first call's three attempts opened it; nine skipped it
    assert results[-1].history[0].error == "CircuitOpen" and results[-1].attempts == 2
    assert requests(healthy) == 10


@pytest.mark.sim(faults={"server_error": 1.0}, fault_attempts=3)
def test_after_the_cooloff_one_probe_closes_it(sim: Simulator) -> None:
    ga.configure(breaker_failures=3, breaker_cooloff=1, retries=0)
    agent = at(SentimentAgent, sim.base_url)
    assert all(isinstance(agent.call(text="same").error, ServerError) for _ in range(3))
    refused = agent.call(text="same")
    assert isinstance(refused.error, CircuitOpen) and "breaker_failures=None" in str(refused.error)
    assert requests(sim) == 3
    time.sleep(1.1)
    assert agent.call(text="same").ok  # the probe: the endpoint healed
    assert agent.call(text="same").ok and requests(sim) == 5


@pytest.mark.sim(faults={"server_error": 1.0})
def test_a_failed_probe_opens_it_again(sim: Simulator) -> None:
    ga.configure(breaker_failures=2, breaker_cooloff=1, retries=0)
    agent = at(SentimentAgent, sim.base_url)
    for _ in range(2):
        agent.call(text="x")
    time.sleep(1.1)
    assert isinstance(agent.call(text="x").error, ServerError)  # the probe, sent and failed
    assert isinstance(agent.call(text="x").error, CircuitOpen) and requests(sim) == 3


@pytest.mark.sim(latency=0.5, faults={"server_error": 1.0}, fault_attempts=2)
def test_half_open_lets_one_probe_through(sim: Simulator) -> None:
    ga.configure(breaker_failures=2, breaker_cooloff=1, retries=0)
    agent = at(SentimentAgent, sim.base_url)
    for _ in range(2):
        agent.call(text="same")
    time.sleep(1.1)
    results = ga.batch([(agent, {"text": "same"})] * 20)
    assert sum(r.ok for r in results) == 1
    assert sum(isinstance(r.error, CircuitOpen) for r in results) == 19 and requests(sim) == 3


@pytest.mark.sim(faults={"server_error": 1.0})
def test_breakers_are_on_by_default_after_five_failures(sim: Simulator) -> None:
    ga.configure(retries=0)
    agent = at(SentimentAgent, sim.base_url)
    errors = [agent.call(text="x").error for _ in range(8)]
    assert [isinstance(e, CircuitOpen) for e in errors] == [False] * 5 + [True] * 3
    assert requests(sim) == 5


@pytest.mark.sim(faults={"server_error": 1.0})
def test_breaker_failures_none_turns_them_off(sim: Simulator) -> None:
    ga.configure(retries=0, breaker_failures=None)
    agent = at(SentimentAgent, sim.base_url)
    assert not any(isinstance(agent.call(text="x").error, CircuitOpen) for _ in range(8))
    assert requests(sim) == 8


@pytest.mark.sim(faults={"rate_limit": 1.0})
def test_answers_from_the_server_do_not_open_it(sim: Simulator) -> None:
    ga.configure(breaker_failures=2, retries=0)
    agent = at(SentimentAgent, sim.base_url)
    assert all(isinstance(agent.call(text="x").error, ga.errors.RateLimited) for _ in range(5))
    assert requests(sim) == 5



@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.sim(faults={"server_error": 1.0})
def test_workers_share_breakers_through_the_rate_limit_redis(sim: Simulator,
                                                             redis_url: str) -> None:
    ga.configure(breaker_failures=2, retries=0)
    ga.rate_limit("openai", rpm=10_000, storage=redis_url)
    agent = at(SentimentAgent, sim.base_url)
    for _ in range(2):
        agent.call(text="x")
    with ga.Client(breaker_failures=2, retries=0) as worker:  # as another worker: the same Redis
        worker.rate_limit("openai", rpm=10_000, storage=redis_url)
        assert isinstance(worker.call(agent, text="x").error, CircuitOpen) and requests(sim) == 2


@pytest.mark.sim(latency=0.5)
def test_attempts_cut_short_by_the_calls_deadline_are_no_evidence(sim: Simulator) -> None:
    # Each attempt may take only what is left of its call's deadline (0.2 s), not its timeout
    # (60 s): its Timeout says the call ran out of time, not that the endpoint is down. Counted,
    # a healthy endpoint (the fault matrix's calls near their deadline) opened its breaker.
    ga.configure(breaker_failures=2, retries=0)
    rushed = at(SentimentAgent, sim.base_url, retries=ga.Retry(max=0, deadline=0.2))
    assert all(isinstance(rushed.call(text=f"t{n}").error, ga.errors.Timeout) for n in range(3))
    assert at(SentimentAgent, sim.base_url).call(text="patient").ok  # not CircuitOpen


@pytest.mark.sim()
def test_calls_that_never_reached_the_endpoint_are_no_evidence(sim: Simulator) -> None:
    ga.configure(breaker_failures=2, retries=0)
    agent = at(SentimentAgent, sim.base_url, retries=ga.Retry(max=0, deadline=0.5))
    limits.cooldown(f"openai@{sim.base_url}", 1.0)  # a 429 cooldown outlasting their deadline
    assert all(isinstance(agent.call(text=f"t{n}").error, ga.errors.Timeout) for n in range(3))
    assert requests(sim) == 0
    time.sleep(1.1)
    assert agent.call(text="after the cooldown").ok and requests(sim) == 1


@pytest.mark.sim(faults={"server_error": 1.0})
def test_a_dead_endpoint_opens_under_concurrency_too(
        sim: Simulator, sim_factory: Callable[..., Simulator]) -> None:
    healthy = sim_factory()
    ga.configure(breaker_failures=3, retries=3)
    agent = at(SentimentAgent, sim.base_url, fallbacks=(("openai/gpt-4o", healthy.base_url),),
               retries=ga.Retry(max=3, base=0.05, cap=0.1))
    results = ga.batch([(agent, {"text": f"t{n}"}) for n in range(300)], max_concurrent=100)
    assert all(r.ok and r.model == "openai/gpt-4o" for r in results)
    assert requests(sim) < 600  # without the breaker: 300 calls × 4 attempts = 1,200
    assert sum(any(a.error == "CircuitOpen" for a in r.history) for r in results) > 100


@pytest.mark.sim(latency=0.5, faults={"server_error": 1.0}, fault_attempts=1)
def test_a_streak_that_an_answer_on_its_way_may_end_refuses_no_call(sim: Simulator) -> None:
    # Two 500s come back while a success is still on its way: the streak reached the threshold
    # but did not open. Before, calls were then refused as if half-open (CircuitOpen from a
    # breaker that never opened): the fault matrix's healthy endpoint failed calls that way.
    ga.configure(breaker_failures=2, retries=0)
    agent = at(SentimentAgent, sim.base_url)
    agent.call(text="w")  # each conversation's first try is a 500; then it answers in 0.5 s
    assert agent.call(text="w").ok
    on_its_way = gevent.spawn(agent.call, text="w")
    gevent.sleep(0.05)
    assert all(isinstance(agent.call(text=f"f{n}").error, ServerError) for n in range(2))
    later = ga.batch([(agent, {"text": "w"})] * 3)
    assert on_its_way.get().ok and all(r.ok for r in later)


@pytest.mark.sim(latency=0.05, latency_p99=0.3, fault_attempts=None, retry_after=0.5, faults={
    "rate_limit": 0.10, "server_error": 0.05, "reset": 0.02, "hang": 0.01, "malformed": 0.02,
    "schema_invalid": 0.05})
def test_the_fault_matrix_keeps_a_flaky_endpoint_closed(sim: Simulator) -> None:
    # tests/test_retry.py's fault matrix with breakers on: 10 % of attempts end in a 5xx, a reset,
    # a hang or a broken body, yet the endpoint answers most calls. Before, it opened in about
    # one run of three here (4-52 calls failed CircuitOpen).
    ga.configure(breaker_failures=5)
    agent = at(SentimentAgent, sim.base_url, timeout=2.0,
               retries=ga.Retry(max=6, base=0.05, cap=0.5, deadline=8.0))
    results = ga.batch([(agent, {"text": f"review {i}"}) for i in range(1000)],
                       max_concurrent=200, warn_failures=False)
    assert not [r for r in results if any(a.error == "CircuitOpen" for a in r.history)]
