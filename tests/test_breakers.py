"""Circuit breakers against the simulator's faults: open, fallbacks at once, half-open probe, close."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import pytest

import greenagents as ga
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
def test_breakers_are_off_by_default(sim: Simulator) -> None:
    ga.configure(retries=0)
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
