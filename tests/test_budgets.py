"""Money budgets over real HTTP against the simulator (and a real Redis for a shared budget)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import greenagents as ga
from greenagents import budgets, tracking
from greenagents.errors import BudgetExceeded
from greenagents.testing import Simulator

from .agents import SentimentAgent, at


def one_call_cost(sim: Simulator) -> float:
    result = at(SentimentAgent, sim.base_url).call(text="measure")
    assert result.cost_usd
    sim.reset()
    return result.cost_usd


def worst_case(agent: type[ga.Agent], text: str) -> float:
    """What one attempt reserves (see greenagents.budgets): prompt estimate + max_tokens."""
    messages = agent._messages({"text": text})
    return budgets._worst_case(agent.model or "", messages, agent.max_tokens) / 1e9


def stopped(results: list[ga.Result]) -> list[ga.Result]:
    return [r for r in results if isinstance(r.error, BudgetExceeded)]


@pytest.mark.filterwarnings("ignore::greenagents.budgets.BudgetWarning")
@pytest.mark.sim(latency=0.3)
def test_overshoot_is_bounded_under_200_wide_concurrency(sim: Simulator) -> None:
    cost = one_call_cost(sim)
    agent = at(SentimentAgent, sim.base_url, max_tokens=60)  # reservations cover every answer
    limit = 50 * cost
    results = ga.batch([(agent, {"text": f"review {n}"}) for n in range(1000)],
                       max_concurrent=200, max_cost_usd=limit)
    sent = [r for r in results if r.ok]
    assert len(stopped(results)) + len(sent) == 1000 and stopped(results) and sent
    spent = sum(r.cost_usd or 0 for r in results)
    # The documented bound: what in-flight attempts cost beyond their reservation, here nothing.
    assert spent <= limit + 1e-9
    assert spent >= limit - 2 * worst_case(agent, "review 0")  # stopped late, not spuriously
    assert sim.stats()["requests"] == len(sent)  # a stopped call sent nothing
    assert all(r.cost_usd == 0 and r.usage == ga.Usage() for r in stopped(results))
    assert "raise max_cost_usd" in str(stopped(results)[0].error)


@pytest.mark.filterwarnings("ignore::greenagents.budgets.BudgetWarning")
@pytest.mark.sim(latency=0.3)
def test_without_max_tokens_the_overshoot_stays_within_the_in_flight_bound(sim: Simulator) -> None:
    cost = one_call_cost(sim)
    limit = 30 * cost
    results = ga.batch([(at(SentimentAgent, sim.base_url), {"text": f"r{n}"}) for n in range(600)],
                       max_concurrent=200, max_cost_usd=limit)
    spent = sum(r.cost_usd or 0 for r in results)
    assert stopped(results) and spent <= limit + 200 * max(r.cost_usd or 0 for r in results)


def test_budget_stops_are_not_retried_and_try_no_fallback(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.base_url, fallbacks=("openai/gpt-4o",))
    (result,) = ga.batch([(agent, {"text": "x"})], max_cost_usd=1e-9)
    assert isinstance(result.error, BudgetExceeded) and result.model == "openai/gpt-4o-mini"
    assert result.attempts == 1 and result.history[0].error == "BudgetExceeded"
    assert sim.stats()["requests"] == 0


def test_an_unknown_price_is_refused_under_a_budget_and_unknown_without(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.base_url, model="openai/house-model-7")
    assert agent.call(text="x").cost_usd is None  # unknown, never $0
    (result,) = ga.batch([(agent, {"text": "x"})], max_cost_usd=100)
    assert isinstance(result.error, BudgetExceeded) and "register_price" in str(result.error)
    assert sim.stats()["requests"] == 1


def test_the_process_budget_spans_calls_and_runs(sim: Simulator) -> None:
    cost = one_call_cost(sim)
    agent = at(SentimentAgent, sim.base_url, max_tokens=60)
    # Three sequential calls fit: the third's worst case just fits after two were paid.
    ga.configure(max_cost_usd=2 * cost + worst_case(agent, "same") * 1.01)
    first = [agent.call(text="same") for _ in range(3)]
    later = ga.batch([(agent, {"text": "same"})] * 3)
    assert all(r.ok for r in first)
    assert all(isinstance(r.error, BudgetExceeded) for r in later)
    assert sim.stats()["requests"] == 3


def test_tenants_spend_from_their_own_budgets(sim: Simulator) -> None:
    cost = one_call_cost(sim)
    agent = at(SentimentAgent, sim.base_url, max_tokens=60)
    with ga.budget("tenant-a", max_cost_usd=2 * cost + worst_case(agent, "a0")) as a:
        spent_a = ga.batch([(agent, {"text": f"a{n}"}) for n in range(10)])
    with ga.budget("tenant-b", max_cost_usd=100 * cost) as b:
        spent_b = ga.batch([(agent, {"text": f"b{n}"}) for n in range(10)])
    assert 1 <= sum(r.ok for r in spent_a) <= 3 and all(r.ok for r in spent_b)
    assert a.spent_usd <= a.max_cost_usd and b.spent_usd == pytest.approx(
        sum(r.cost_usd or 0 for r in spent_b), abs=1e-5)


@pytest.mark.sim(faults={"malformed": 1.0}, fault_attempts=2)
def test_every_billed_attempt_counts(sim: Simulator) -> None:
    with ga.budget("reasks", max_cost_usd=1.0) as spend:
        result = at(SentimentAgent, sim.base_url).call(text="x")
    assert result.ok and result.attempts == 3
    assert spend.spent_usd == pytest.approx(result.cost_usd, abs=1e-5)


def test_the_soft_threshold_warns_once(sim: Simulator) -> None:
    cost = one_call_cost(sim)
    agent = at(SentimentAgent, sim.base_url, max_tokens=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ga.budget("soft", max_cost_usd=10 * cost, warn_at=0.5):
            for n in range(8):
                agent.call(text=f"s{n}")
    assert [w.category for w in caught].count(budgets.BudgetWarning) == 1


def test_bad_budget_values_name_the_fix() -> None:
    with pytest.raises(ga.errors.ConfigError, match="max_cost_usd must be > 0"):
        ga.batch([], max_cost_usd=0)
    with pytest.raises(ga.errors.ConfigError, match="warn_at"), ga.budget("x", max_cost_usd=1, warn_at=2):
        pass


def test_budget_stops_reach_the_log(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ga.configure(tracking=f"sqlite:///{db}")
    ga.batch([(at(SentimentAgent, sim.base_url), {"text": "x"})] * 3, max_cost_usd=1e-9)
    tracking.flush()
    (group,) = tracking.summary(str(db))
    assert group["budget_stopped"] == 3



@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_named_budget_in_redis_is_shared(sim: Simulator, redis_url: str) -> None:
    cost = one_call_cost(sim)
    agent = at(SentimentAgent, sim.base_url, max_tokens=60)
    limit = cost + worst_case(agent, "same") * 1.01  # room for two calls
    with ga.budget("shared", max_cost_usd=limit, storage=redis_url):
        assert agent.call(text="same").ok and agent.call(text="same").ok
    with ga.Client().use(), ga.budget("shared", max_cost_usd=limit,  # as another worker
                                      storage=redis_url) as again:
        assert isinstance(agent.call(text="same").error, BudgetExceeded)
        assert again.spent_usd == pytest.approx(2 * cost, abs=1e-5)


def test_the_cli_imports_no_budget_or_lock_module_before_it_patches() -> None:
    # runtime once imported budgets (and with it limits' and tracking's module locks) at import:
    # the CLI imports runtime before patching, so those were OS locks and `run --cache` hung
    code = ("import sys, greenagents.cli; print(sorted(m for m in ('greenagents.budgets', "
            "'greenagents.limits', 'greenagents.tracking') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
