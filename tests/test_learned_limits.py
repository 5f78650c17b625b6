"""Rate limits learned from the providers' headers, against the simulator that sends them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import requests

import greenagents as ga
from greenagents import learned_limits, limits
from greenagents.http import Headers
from greenagents.ratelimit_headers import Reading, parse, parse_duration, parse_reset
from greenagents.testing import Simulator

from .agents import SentimentAgent, SummaryAgent, at
from .conftest import run_python

NOON = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def statuses(sim: Simulator) -> dict[str, int]:
    return dict(sim.stats()["by_status"])


def agent_for(sim: Simulator, provider: str, **attributes: object) -> type[ga.Agent]:
    if provider == "openai":
        return at(SentimentAgent, sim.base_url, **attributes)
    return at(SummaryAgent, sim.anthropic_url, **attributes)


def key_of(sim: Simulator, provider: str) -> str:
    if provider == "openai":
        return f"openai@{sim.base_url}/gpt-4o-mini"
    return f"anthropic@{sim.anthropic_url}/claude-haiku-4-5"


# ---------------------------------------------------------------- reading the headers


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0s", 0.0),
    (".5s", 0.5), ("1.5", 1.5), ("250us", 0.00025), (" 7s ", 7.0), ("1m", 60.0),
])
def test_go_durations_as_openai_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "6x", "1s2", "-1s", "-3", "nan", "inf", "1 s", "1s 2m"])
def test_malformed_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("2026-11-30T12:00:07Z", 7.0), ("2026-11-30T12:00:07.250Z", 7.25),
    ("2026-11-30T13:00:07+01:00", 7.0), ("2026-11-30T12:00:07", 7.0),  # no offset: UTC
    ("2026-11-30T11:59:00Z", 0.0),  # in the past: already reset
])
def test_rfc3339_resets_as_anthropic_writes_them(text: str, seconds: float) -> None:
    assert parse_reset(text, now=NOON) == pytest.approx(seconds)


def test_a_budget_needs_its_remaining_and_reset_and_bad_values_are_skipped() -> None:
    stated = parse(Headers({
        "X-RateLimit-Limit-Requests": "500", "X-RateLimit-Remaining-Requests": "499",
        "X-RateLimit-Reset-Requests": "120ms",                       # case-insensitive
        "x-ratelimit-remaining-tokens": "1000",                      # no reset: skipped
        "anthropic-ratelimit-requests-remaining": "-2",              # negative: skipped
        "anthropic-ratelimit-requests-reset": "2026-11-30T12:00:01Z",
        "anthropic-ratelimit-output-tokens-remaining": "80.0",       # a float count is read
        "anthropic-ratelimit-output-tokens-reset": "soon",           # unreadable reset: skipped
        "anthropic-ratelimit-input-tokens-limit": "many",            # bad limit: None
        "anthropic-ratelimit-input-tokens-remaining": "3000",
        "anthropic-ratelimit-input-tokens-reset": "2026-11-30T12:00:02Z",
    }), now=NOON)
    assert stated == {"requests": Reading(500, 499, 0.12),
                      "input_tokens": Reading(None, 3000, 2.0)}


@pytest.mark.parametrize(("path", "prefix"), [("/chat/completions", "x-ratelimit-"),
                                              ("/messages", "anthropic-ratelimit-")])
@pytest.mark.sim(rpm=3, tpm=100_000)
def test_the_simulator_states_its_limits_on_every_answer_429s_included(
        sim: Simulator, path: str, prefix: str) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"anthropic-version": "2023-06-01"} if "messages" in path else {}
    answers = [requests.post(sim.base_url + path, json=body, headers=headers, timeout=10)
               for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    stated = [parse(Headers(a.headers.items())) for a in answers]
    assert [s["requests"].remaining for s in stated] == [2, 1, 0, 0]
    assert all(s["requests"].limit == 3 and 0 < s["requests"].reset_s <= 61 for s in stated)
    assert stated[0]["tokens"].limit == 100_000 and stated[1]["tokens"].remaining < 100_000
    assert all(name.startswith(prefix) for name in answers[0].headers if "ratelimit" in name)


def test_a_simulator_without_limits_states_none(sim: Simulator) -> None:
    answer = requests.post(sim.base_url + "/chat/completions", timeout=10, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.ok and not [name for name in answer.headers if "ratelimit" in name.lower()]


# ---------------------------------------------------------------- pacing by them


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.sim(rpm=6)
def test_a_spent_budget_is_waited_for_instead_of_asked_into_a_429(
        sim: Simulator, provider: str) -> None:
    agent = agent_for(sim, provider, retries=ga.Retry(max=3, deadline=2))
    assert all(r.ok for r in ga.batch([(agent, {"text": f"t{n}"}) for n in range(6)],
                                      max_concurrent=1))  # one at a time: the count is exact
    assert learned_limits.learned(key_of(sim, provider))["requests"].limit == 6
    late = ga.batch([(agent, {"text": f"late {n}"}) for n in range(4)], warn_failures=False)
    assert all(isinstance(r.error, ga.errors.Timeout) and "rate limit is spent" in str(r.error)
               for r in late)
    assert statuses(sim) == {"200": 6}  # not one 429: the four calls never went


@pytest.mark.sim(rpm=2, rate_window=3600)
def test_a_budget_spent_for_an_hour_fails_the_call_instead_of_parking_it(sim: Simulator) -> None:
    agent = agent_for(sim, "openai", retries=3)
    assert all(agent.call(text=f"t{n}").ok for n in range(2))
    refused = agent.call(text="one more")
    assert isinstance(refused.error, ga.errors.RateLimited) and "spent for" in str(refused.error)
    assert refused.attempts == 1 and statuses(sim) == {"200": 2}


@pytest.mark.sim(rpm=6)
def test_without_learning_the_same_calls_meet_429s(sim: Simulator) -> None:
    ga.configure(learn_rate_limits=False)
    agent = agent_for(sim, "openai", retries=0)
    ga.batch([(agent, {"text": f"t{n}"}) for n in range(10)], max_concurrent=3, warn_failures=False)
    assert statuses(sim) == {"200": 6, "429": 4}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.sim(rpm=5, rate_window=1.5)
def test_after_the_reset_calls_go_again_at_the_stated_limit(sim: Simulator, provider: str) -> None:
    agent = agent_for(sim, provider, retries=0)
    assert agent.call(text="first").ok  # learn: nothing is known before the first answer
    results = ga.batch([(agent, {"text": f"t{n}"}) for n in range(11)], max_concurrent=11)
    assert all(r.ok for r in results)
    assert statuses(sim) == {"200": 12}  # three windows' worth, not one 429


@pytest.mark.sim(rpm=4, rate_window=1.0, faults={"rate_limit": 1.0}, fault_attempts=1,
                 retry_after=0.2)
def test_a_429_with_budget_left_does_not_stop_the_others(sim: Simulator) -> None:
    agent = agent_for(sim, "openai", retries=ga.Retry(max=2, backoff="none"))
    assert agent.call(text="busy shard").ok  # a 429 (fault), then its retry
    stated = learned_limits.learned(key_of(sim, "openai"))["requests"]
    assert stated.left >= 2  # the 429 said 3 were left: not taken as a spent budget


@pytest.mark.sim(rpm=2)
def test_a_configured_rpm_is_used_as_set_and_the_headers_do_not_pace_requests(
        sim: Simulator) -> None:
    ga.rate_limit("openai", rpm=1_000)  # wrong on purpose: the user's word wins for requests
    agent = agent_for(sim, "openai", retries=0)
    ga.batch([(agent, {"text": f"t{n}"}) for n in range(4)], max_concurrent=1, warn_failures=False)
    assert statuses(sim) == {"200": 2, "429": 2}


@pytest.mark.sim(tpm=400)
def test_a_tokens_budget_is_learned_and_paced_too(sim: Simulator) -> None:
    agent = agent_for(sim, "openai", retries=ga.Retry(max=3, deadline=1.5), max_tokens=20)
    results = ga.batch([(agent, {"text": "x" * 200}) for _ in range(12)], max_concurrent=1,
                       warn_failures=False)
    stated = learned_limits.learned(key_of(sim, "openai"))
    assert stated["tokens"].limit == 400 and "requests" not in stated
    assert any(r.ok for r in results) and any(isinstance(r.error, ga.errors.Timeout) for r in results)
    assert statuses(sim).get("429", 0) <= 1  # paced by estimate: at most one misjudged request


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.sim(rpm=5)
def test_workers_share_what_they_learned_through_redis(sim: Simulator, redis_url: str,
                                                       sim_factory: Callable[..., Simulator]) -> None:
    limits.share(redis_url)
    agent = agent_for(sim, "openai", retries=0)
    assert all(r.ok for r in ga.batch([(agent, {"text": f"t{n}"}) for n in range(5)]))
    worker = run_python(f"""
        import greenagents.monkey
        import greenagents as ga
        from greenagents import limits
        limits.share({redis_url!r})
        class Agent(ga.Agent):
            model = "openai/gpt-4o-mini"
            base_url = {sim.base_url!r}
            retries = ga.Retry(max=0, deadline=1)
        print(type(Agent.call(input="another worker").error).__name__)
    """)
    assert worker.stdout.strip() == "Timeout", worker.stderr
    assert statuses(sim) == {"200": 5}  # the other worker knew the budget was spent


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.sim(rpm=100_000, latency=0.2)
def test_a_shared_redis_serves_two_hundred_calls_at_once(sim: Simulator, redis_url: str) -> None:
    # Before, redis-py's pool refused its 101st connection: half of these calls failed with
    # MaxConnectionsError (the cooldown check and the learned limits each asked Redis).
    ga.rate_limit("anthropic", rpm=1_000, storage=redis_url)  # the storage, not a budget here
    agent = agent_for(sim, "openai", retries=0)
    results = ga.batch([(agent, {"text": f"t{n}"}) for n in range(400)], max_concurrent=200)
    assert all(r.ok for r in results), {type(r.error).__name__ for r in results if not r.ok}
    assert learned_limits.learned(key_of(sim, "openai"))["requests"].limit == 100_000
