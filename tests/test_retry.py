"""Reliability against the simulator's faults: retries, Retry-After, slot release, limits, fallbacks."""

from __future__ import annotations

import dataclasses
import gc
import time

import gevent
import pytest
import tenacity

import greenagents as ga
from greenagents import errors
from greenagents.retry import Attempts, policy_for, with_fallbacks
from greenagents.testing import Simulator

from .agents import SentimentAgent, SummaryAgent, at

FAST = ga.Retry(max=3, backoff="fixed", base=0.05, jitter=False)


@pytest.mark.sim(faults={"server_error": 1.0}, fault_attempts=2)
def test_server_errors_are_retried_and_recorded(sim: Simulator) -> None:
    result = at(SentimentAgent, sim.base_url, retries=FAST).call(text="x")
    assert result.ok and result.attempts == 3
    assert [h.error for h in result.history] == ["ServerError", "ServerError", None]
    assert [h.status for h in result.history] == [500, 500, None]
    assert result.history[0].wait_s == pytest.approx(0.05)


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=1.0)
def test_retry_after_is_the_wait(sim: Simulator) -> None:
    result = at(SummaryAgent, sim.anthropic_url, retries=FAST).call(text="x")
    assert result.ok and result.attempts == 2
    assert result.history[0].error == "RateLimited" and result.history[0].wait_s == 1.0
    assert result.duration_s >= 1.0


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=5.0)
def test_retry_after_beyond_the_cap_fails_clearly(sim: Simulator) -> None:
    ga.configure(retry_after_max=2)
    result = at(SentimentAgent, sim.base_url).call(text="x")
    assert isinstance(result.error, errors.RateLimited) and result.attempts == 1
    assert isinstance(result.error, errors.RetryAfterTooLong) and not result.error.retryable
    assert "retry_after_max=2s" in str(result.error)
    assert errors.RateLimited.retryable  # the refusal is its own type: no instance was changed


@pytest.mark.sim(faults={"server_error": 1.0})
def test_retries_zero_and_default(sim: Simulator) -> None:
    assert at(SentimentAgent, sim.base_url, retries=0).call(text="x").attempts == 1
    ga.configure(retries=1)
    fast_default = ga.Retry(max=ga.settings().retries, base=0.01, jitter=False)
    assert at(SentimentAgent, sim.base_url, retries=fast_default).call(text="x").attempts == 2


@pytest.mark.sim(api_key="right-key")
def test_auth_errors_are_not_retried(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    result = at(SentimentAgent, sim.base_url, retries=FAST).call(text="x")
    assert isinstance(result.error, errors.AuthError) and result.attempts == 1


@pytest.mark.sim(faults={"quota": 1.0})
def test_an_account_out_of_credit_is_not_retried(sim: Simulator) -> None:
    result = at(SentimentAgent, sim.base_url, retries=FAST).call(text="x")
    assert isinstance(result.error, errors.QuotaExceeded) and result.attempts == 1
    assert result.error.status == 429 and "billing" in str(result.error)
    anthropic = at(SummaryAgent, sim.anthropic_url, retries=FAST).call(text="x")
    assert isinstance(anthropic.error, errors.BadRequest) and anthropic.attempts == 1
    assert "credit balance is too low" in str(anthropic.error)
    assert sim.stats()["requests"] == 2


@pytest.mark.sim(faults={"hang": 1.0}, fault_attempts=1)
def test_a_hanging_answer_times_out_and_is_retried(sim: Simulator) -> None:
    result = at(SentimentAgent, sim.base_url, retries=FAST, timeout=0.3).call(text="x")
    assert result.ok and [h.error for h in result.history] == ["Timeout", None]


@pytest.mark.sim(faults={"reset": 0.5, "malformed": 0.25, "truncated": 0.25}, fault_attempts=1)
def test_broken_transports_are_retried(sim: Simulator) -> None:
    # Every first attempt fails here: under load five can fail in a row before any retry answers,
    # and a breaker (on by default) would rightly open on an endpoint that never answered.
    ga.configure(breaker_failures=None)
    agent = at(SentimentAgent, sim.base_url, retries=FAST)
    results = ga.batch([(agent, {"text": f"t{i}"}) for i in range(30)])
    assert all(r.ok for r in results)
    seen = {h.error for r in results for h in r.history} - {None}
    assert seen == {"ConnectionFailed", "ServerError"}


def test_user_tenacity_policy_sleeps_cooperatively(sim_factory: object) -> None:
    sim = sim_factory(faults={"server_error": 1.0}, fault_attempts=1)  # type: ignore[operator]
    mine = tenacity.Retrying(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(0.5),
                             retry=tenacity.retry_if_exception_type(errors.ServerError))
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        while True:
            gevent.sleep(0.05)
            ticks += 1

    watcher = gevent.spawn(ticker)
    result = at(SentimentAgent, sim.base_url, retries=mine).call(text="x")
    watcher.kill()
    assert result.ok and result.attempts == 2
    assert ticks >= 5  # the hub kept running during the 0.5 s backoff


def test_backoff_gives_the_slot_to_another_call(sim_factory: object) -> None:
    limited = sim_factory(faults={"rate_limit": 1.0}, fault_attempts=1,  # type: ignore[operator]
                          retry_after=2.0)
    healthy = sim_factory(latency=0.1)  # type: ignore[operator]
    backing_off = at(SentimentAgent, limited.base_url)
    quick = at(SummaryAgent, healthy.anthropic_url)
    start = time.monotonic()
    finished: dict[int, float] = {}
    calls = [(backing_off, {"text": "a"}), (backing_off, {"text": "b"}), (quick, {"text": "c"})]
    results = ga.batch(calls, max_concurrent=2,
                       on_result=lambda r: finished.__setitem__(r.index or 0,
                                                                time.monotonic() - start))
    assert all(r.ok for r in results)
    assert finished[2] < 1.0 < 2.0 <= min(finished[0], finished[1])


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=3, retry_after=0.5)
def test_an_endpoint_letting_nothing_through_cools_down_every_call(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.base_url, retries=ga.Retry(max=5, base=0.01))
    first = [ga.spawn(agent.call, text=f"first {i}") for i in range(10)]
    while sim.stats()["requests"] < 20:  # 429s at 0 s and again at 0.5 s: nothing through for a
        gevent.sleep(0.01)               # whole Retry-After, whatever the machine's load
    gevent.sleep(0.05)  # the clients have read those second 429s
    late = agent.call(text="late")
    assert all(g.get().ok for g in first) and late.ok
    assert late.history[0].duration_s >= 0.15  # waited out the cooldown before asking


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=1.0)
def test_one_429_does_not_pause_other_calls(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.base_url)
    first = ga.spawn(agent.call, text="first")
    gevent.sleep(0.2)
    late = agent.call(text="late")
    assert first.get().ok and late.ok
    assert late.history[0].duration_s < 0.5 and late.history[0].error == "RateLimited"


def test_rpm_budget_holds(sim: Simulator) -> None:
    ga.rate_limit("openai", rpm=30)
    agent = at(SentimentAgent, sim.base_url)
    results = ga.batch([(agent, {"text": f"t{i}"}) for i in range(40)], deadline=1.5)
    # 30, or 31 when the run straddles a minute boundary: the sliding-window counter weighs the
    # previous minute's 30 by its remaining share and rounds down (see ga.rate_limit's docstring).
    assert 30 <= sum(r.ok for r in results) == sim.stats()["requests"] <= 31
    assert all(isinstance(r.error, errors.Timeout) for r in results if not r.ok)


def test_rate_limit_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rpm"):
        ga.rate_limit("openai", rpm=0)
    with pytest.raises(ValueError, match="give rpm="):
        ga.rate_limit("openai")


@pytest.mark.usefixtures("http_transport")
@pytest.mark.parametrize(("fault", "before"), [("overloaded", ["ServerError"] * 4),
                                               ("quota", ["QuotaExceeded"])])  # out of credit
def test_fallback_answers_when_the_primary_cannot(sim_factory: object, fault: str,
                                                  before: list[str]) -> None:
    down = sim_factory(faults={fault: 1.0})  # type: ignore[operator]
    backup = sim_factory()  # type: ignore[operator]
    agent = at(SentimentAgent, down.base_url, retries=FAST,
               fallbacks=(("anthropic/claude-haiku-4-5", backup.anthropic_url),))
    result = agent.call(text="x")
    assert result.ok and result.model == "anthropic/claude-haiku-4-5"
    assert [h.error for h in result.history] == [*before, None]
    assert [h.model for h in result.history] == ["openai/gpt-4o-mini"] * len(before) + [
        "anthropic/claude-haiku-4-5"]


@pytest.mark.sim(api_key="k")
def test_no_fallback_for_a_bad_request(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "nope")
    agent = at(SentimentAgent, sim.base_url, fallbacks=("openai/gpt-4o",))
    result = agent.call(text="x")
    assert isinstance(result.error, errors.AuthError) and result.attempts == 1


@pytest.mark.usefixtures("http_transport")
@pytest.mark.sim(faults={"server_error": 1.0})
def test_deadline_bounds_the_whole_call(sim: Simulator) -> None:
    policy = ga.Retry(max=50, backoff="fixed", base=0.3, jitter=False, deadline=1.0)
    start = time.monotonic()
    result = at(SentimentAgent, sim.base_url, retries=policy).call(text="x")
    assert not result.ok and time.monotonic() - start < 2.0
    assert 2 <= result.attempts < 10


@pytest.mark.usefixtures("http_transport")
@pytest.mark.sim(latency=0.05, latency_p99=0.3, fault_attempts=None, retry_after=0.5, faults={
    "rate_limit": 0.10, "server_error": 0.05, "reset": 0.02, "hang": 0.01, "malformed": 0.02,
    "schema_invalid": 0.05})
def test_fault_matrix_every_input_accounted(sim: Simulator) -> None:
    # Retries are under test, not breakers: on a loaded machine five 2 s timeouts in a row (hangs,
    # slow answers) can open the endpoint's breaker (on by default), as it is meant to.
    ga.configure(breaker_failures=None)
    policy = ga.Retry(max=6, base=0.05, cap=0.5, deadline=8.0)
    # timeout bounds a whole attempt (not the gap between bytes): 2 s leaves room for a loaded CI
    agent = at(SentimentAgent, sim.base_url, retries=policy, timeout=2.0)
    before = set(_alive_greenlets())  # others' (e.g. a Celery result drainer) are not ours
    start = time.monotonic()
    results = ga.batch([(agent, {"text": f"review {i}"}) for i in range(1000)],
                       max_concurrent=200)
    assert [r.index for r in results] == list(range(1000))
    assert sum(r.ok for r in results) >= 995, [r.error for r in results if not r.ok][:5]
    assert max(r.duration_s for r in results) < 8.0 + 1.0
    assert time.monotonic() - start < 60
    gevent.sleep(0.1)
    assert [g for g in _alive_greenlets() if g not in before] == []


def _alive_greenlets() -> list[gevent.Greenlet]:
    ours = gevent.get_hub()  # the simulator's greenlets live in its own thread's hub
    return [g for g in gc.get_objects()
            if isinstance(g, gevent.Greenlet) and not g.dead and g.parent is ours]


@pytest.mark.usefixtures("http_transport")
@pytest.mark.sim(faults={"hang": 1.0})
def test_deadline_counts_the_first_attempt(sim: Simulator) -> None:
    # The first attempt runs before tenacity does; the deadline still counts it.
    policy = ga.Retry(max=5, backoff="fixed", base=0.5, jitter=False, deadline=1.0)
    result = at(SentimentAgent, sim.base_url, retries=policy, timeout=0.6).call(text="x")
    assert isinstance(result.error, errors.Timeout)
    assert result.attempts == 1 and result.duration_s < 1.0


def test_retry_alone_is_a_tenacity_policy() -> None:
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise errors.ServerError("boom", status=500)
        return "ok"

    retrying = ga.Retry(max=5, backoff="none", deadline=10).retrying()
    assert retrying(flaky) == "ok" and calls == 3


def test_retry_is_frozen_and_equal_policies_share_one_tenacity_retrying() -> None:
    policy = ga.Retry(max=2, base=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max = 5  # type: ignore[misc]
    assert policy_for(ga.Retry(max=2, base=0.1)) is policy_for(policy)  # one cache entry
    assert dataclasses.replace(policy, max=5).max == 5
    with pytest.raises(ValueError, match="max is the number of retries"):
        ga.Retry(max=-1)
    with pytest.raises(ga.errors.ConfigError, match=r"Retry\.deadline"):
        ga.Retry(deadline=0)


# What the retry fast path (greenagents.retry.Attempts) relies on in tenacity. If tenacity
# changes any of it, these fail here rather than as odd retries in production.

def test_tenacity_treats_an_error_raised_at_attempt_one_as_a_failed_first_attempt() -> None:
    seen: list[tuple[int, object]] = []
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(),
                                 retry=tenacity.retry_if_exception_type(ValueError),
                                 before_sleep=lambda s: seen.append((s.attempt_number, s.args)),
                                 sleep=lambda _: None, reraise=True)
    replayed = [ValueError("first, replayed")]

    def attempt(token: object) -> str:
        if replayed:
            raise replayed.pop()
        return "second"

    token = object()
    assert retrying(attempt, token) == "second"
    # The replayed error counted as attempt 1; the strategies saw the call's own argument.
    assert seen == [(1, (token,))]
    replayed.extend([ValueError("third"), ValueError("second"), ValueError("first")])  # popped
    with pytest.raises(ValueError, match=r"^third$"):  # reraise: the last error, not RetryError
        retrying(attempt, token)


def test_tenacity_keeps_one_shared_retrying_apart_for_concurrent_calls() -> None:
    """One cached Retrying serves every concurrent call: per-call state must not mix."""
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(4), wait=tenacity.wait_fixed(0.01),
                                 retry=tenacity.retry_if_exception_type(ValueError),
                                 before_sleep=lambda s: s.args[0].append(s.attempt_number),
                                 sleep=gevent.sleep, reraise=True)

    def call(fails: int) -> list[int]:
        waits: list[int] = []
        left = [fails]

        def attempt(_: list[int]) -> None:
            if left[0]:
                left[0] -= 1
                raise ValueError("again")

        retrying(attempt, waits)
        return waits

    calls = [gevent.spawn(call, i % 4) for i in range(40)]
    gevent.joinall(calls, raise_error=True)
    assert [c.value for c in calls] == [list(range(1, i % 4 + 1)) for i in range(40)]


def test_the_fast_path_replays_its_first_failure_into_tenacity() -> None:
    attempts, waits = [], []

    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise errors.ServerError("boom", status=500)
        return "ok"

    policy = policy_for(ga.Retry(max=5, backoff="fixed", base=0.01, jitter=False))
    assert policy.tries_first
    assert Attempts(flaky, waits.append).run(policy) == "ok"
    assert len(attempts) == 3 and waits == [0.01, 0.01]  # two backoffs, each heard once

    def down() -> str:
        raise errors.ServerError("down", status=503)

    with pytest.raises(errors.ServerError, match="down"):  # the error itself, one attempt only
        Attempts(down).run(policy_for(ga.Retry(max=0)))


def test_a_first_attempt_made_by_the_caller_is_taken_over_as_attempt_one() -> None:
    """Agents make their first attempt themselves (no frames of ours under it); a failure goes to
    ``with_fallbacks(failed=...)``, which retries it, then the fallbacks, as if it had made it."""
    models, tried = [], []

    def attempt(model: str, endpoint: int) -> str:
        tried.append(model)
        if model == "a":
            raise errors.ServerError("a is down", status=503)
        return f"{model}:{endpoint}"

    policy = policy_for(ga.Retry(max=1, backoff="none"))
    answer = with_fallbacks([("a", 1), ("b", 2)], attempt, policy, on_model=models.append,
                            failed=errors.ServerError("a is down", status=503),
                            started=time.monotonic())
    # one retry of "a" (the caller's attempt counted as the first), then the fallback; the
    # caller already told on_model of "a"
    assert (answer, tried, models) == ("b:2", ["a", "b"], ["b"])

    long_wait = errors.RateLimited("slow down", status=429, retry_after=3600.0)
    with pytest.raises(errors.RetryAfterTooLong, match="retry_after_max") as raised:
        with_fallbacks([("a", 1)], attempt, policy, failed=long_wait, started=time.monotonic())
    assert raised.value.__cause__ is long_wait
