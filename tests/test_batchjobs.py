"""ga.submit_batch / Agent.submit_batch against the simulator's Batch APIs (real HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import greenagents as ga
from greenagents import pricing
from greenagents.errors import BatchCancelled, ConfigError, InputError
from greenagents.result import Usage
from greenagents.testing import Simulator
from tests.agents import Sentiment, SentimentAgent, SummaryAgent, at

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


def _texts(n: int) -> list[dict[str, Any]]:
    return [{"text": f"review number {i}"} for i in range(n)]


@pytest.mark.sim(batch_delay=0.2)
def test_openai_job_gives_validated_results_in_order_at_the_batch_price(sim: Simulator,
                                                                         db: str) -> None:
    agent = at(SentimentAgent, sim.base_url)
    job = agent.submit_batch(_texts(5), db=db, **FAST)
    status = job.status()
    assert status["batches"] == 1 and status["pending"] + status["succeeded"] == 5
    results = job.wait()
    assert [r.index for r in results] == list(range(5))
    assert all(r.ok and isinstance(r.value, Sentiment) for r in results)
    online = agent.call(text="review number 0")
    assert results[0].value == online.value  # the same answer logic, the same parsing
    assert results[0].usage == online.usage and results[0].model == online.model
    assert results[0].cost_usd == pytest.approx(pricing.cost_usd("gpt-4o-mini", online.usage
                                                                 or Usage(), batch=True))
    assert results[0].cost_usd == pytest.approx((online.cost_usd or 0) / 2)
    assert sim.stats()["batches"]["openai_batches"] == 1
    assert job.status() == {"batches": 1, "pending": 0, "succeeded": 5, "failed": 0}


@pytest.mark.sim(batch_delay=0.1)
def test_mixed_providers_split_per_provider_and_limits_split_more(sim: Simulator,
                                                                  db: str) -> None:
    openai_agent = at(SentimentAgent, sim.base_url)
    anthropic_agent = at(SummaryAgent, sim.anthropic_url)
    calls: list[Any] = [(openai_agent if i % 2 else anthropic_agent, {"text": f"t{i}"})
                        for i in range(10)]
    results = ga.submit_batch(calls, db=db, max_rows=2, **FAST).wait()
    assert [r.ok for r in results] == [True] * 10
    assert isinstance(results[1].value, Sentiment) and isinstance(results[0].value, str)
    assert results[0].value.endswith('t0".')  # type: ignore[union-attr]
    assert sim.stats()["batches"] == {"files": 3, "openai_batches": 3, "anthropic_batches": 3,
                                      "cancels": 0}


@pytest.mark.sim(batch_row_failure=0.3, batch_row_expiry=0.2, seed=5)
def test_failed_and_expired_rows_are_resubmitted_up_to_the_retry_count(sim: Simulator,
                                                                         db: str) -> None:
    agent = at(SentimentAgent, sim.base_url, retries=3)
    # rows' fates are rolled from the seed and their custom_id: a fixed job id fixes them
    results = agent.submit_batch(_texts(30), db=db, job_id="rolls", **FAST).wait()
    assert all(r.ok or r.attempts == 4 for r in results)  # 1 + 3 retries, then the error stays
    assert sum(r.ok for r in results) > 25
    assert max(r.attempts for r in results) > 1  # follow-up batches happened
    assert sim.stats()["batches"]["openai_batches"] == max(r.attempts for r in results)
    retried = next(r for r in results if r.attempts > 1)
    assert retried.history[0].error in ("ServerError", "BatchExpired")


@pytest.mark.sim(batch_row_failure=1.0)
def test_no_retries_leaves_the_error_and_fallback_online_answers(sim: Simulator,
                                                                  db: str) -> None:
    agent = at(SentimentAgent, sim.base_url, retries=0)
    failed = agent.submit_batch(_texts(3), db=db, **FAST).wait()
    assert [type(r.error).__name__ for r in failed] == ["ServerError"] * 3
    rescued = agent.submit_batch(_texts(3), db=db, fallback="online", **FAST).wait()
    assert all(r.ok for r in rescued) and rescued[0].attempts == 2
    assert sim.stats()["requests"] == 3  # the online calls; batch rows are not requests


@pytest.mark.sim(batch_delay=30)
def test_cancel_ends_every_row_as_cancelled(sim: Simulator, db: str) -> None:
    job = at(SummaryAgent, sim.anthropic_url).submit_batch(_texts(3), db=db, **FAST)
    job.cancel()
    results = job.wait()
    assert all(isinstance(r.error, BatchCancelled) for r in results)
    assert sim.stats()["batches"]["cancels"] == 1


def test_bad_inputs_fail_alone_and_bad_config_before_anything_is_sent(sim: Simulator,
                                                                       db: str) -> None:
    agent = at(SentimentAgent, sim.base_url)
    results = agent.submit_batch([{"text": "fine"}, {"wrong": 1}, {"text": "x" * 3000}],
                                 db=db, max_bytes=2000, **FAST).wait()
    assert results[0].ok
    assert isinstance(results[1].error, InputError) and "unknown input" in str(results[1].error)
    assert isinstance(results[2].error, InputError) and "over the limit" in str(results[2].error)
    with pytest.raises(ConfigError, match="ollama has no Batch API"):
        ga.submit_batch([(at(SentimentAgent, sim.base_url, model="ollama/llama3"), {"text": "x"})],
                        db=db)
    with pytest.raises(ConfigError, match="plain functions have no Batch API"):
        ga.submit_batch([(len, {"text": "x"})], db=db)  # type: ignore[list-item]
    assert sim.stats()["batches"]["openai_batches"] == 1


@pytest.mark.sim(batch_delay=0.3)
def test_same_job_id_reattaches_and_changed_input_is_refused(sim: Simulator, db: str) -> None:
    agent = at(SentimentAgent, sim.base_url)
    first = agent.submit_batch(_texts(4), db=db, job_id="nightly", **FAST)
    again = agent.submit_batch(_texts(4), db=db, job_id="nightly", **FAST)  # a new process would
    assert [r.value for r in again.wait()] == [r.value for r in first.wait()]
    assert sim.stats()["batches"] == {"files": 1, "openai_batches": 1, "anthropic_batches": 0,
                                      "cancels": 0}
    with pytest.raises(InputError, match="the input changed since"):
        agent.submit_batch(_texts(5), db=db, job_id="nightly")


@pytest.mark.sim(faults={"schema_invalid": 0.5}, seed=2)
def test_invalid_answers_are_reasked_in_a_follow_up_batch(sim: Simulator, db: str) -> None:
    results = at(SummaryAgent, sim.anthropic_url, output=Sentiment, retries=2).submit_batch(
        _texts(12), db=db, job_id="rolls", **FAST).wait()
    reasked = [r for r in results if r.attempts > 1]
    assert reasked and all(r.history[0].error == "InvalidOutput" for r in reasked)
    assert all(r.ok or r.attempts == 3 for r in results)
    assert sum(r.ok for r in results) >= 6  # half the answers invalid, 3 tries each


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_create_whose_id_was_never_recorded_is_found_not_repeated(
        provider: str, sim: Simulator, db: str) -> None:
    """A crash after the provider created the batch but before we stored its id."""
    agent = at(SentimentAgent, sim.base_url) if provider == "openai" else \
        at(SummaryAgent, sim.anthropic_url)
    job = agent.submit_batch(_texts(3), db=db, job_id=f"lost-{provider}", **FAST)
    part = job.parts[0]
    job.store.update(part, state="creating", batch_id=None)  # what the crash leaves behind
    again = agent.submit_batch(_texts(3), db=db, job_id=f"lost-{provider}", **FAST)
    assert again.parts[0].batch_id is not None and all(r.ok for r in again.wait())
    assert sim.stats()["batches"][f"{provider}_batches"] == 1


@pytest.mark.sim(batch_delay=0.2)
def test_results_reach_the_execution_log_and_progress_draws(sim: Simulator, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    ga.configure(tracking=f"sqlite:///{tmp_path / 'log.db'}")
    results = at(SentimentAgent, sim.base_url).submit_batch(_texts(4), **FAST).wait(progress=True)
    assert "batch" in capsys.readouterr().err  # the tqdm bar
    summary = ga.tracking.summary(str(tmp_path / "log.db"))[0]
    assert summary["calls"] == 4 and summary["ok"] == 4
    assert summary["cost_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in results))


@pytest.mark.sim(batch_max_rows=2)
def test_a_batch_the_provider_rejects_is_each_rows_clear_error(sim: Simulator, db: str) -> None:
    results = at(SentimentAgent, sim.base_url).submit_batch(_texts(3), db=db, **FAST).wait()
    assert all("openai rejected the batch" in str(r.error) and "at most 2" in str(r.error)
               for r in results)
    with pytest.raises(ga.errors.BadRequest, match="at most 2 requests per batch"):
        at(SummaryAgent, sim.anthropic_url).submit_batch(_texts(3), db=db)
    fitted = at(SummaryAgent, sim.anthropic_url).submit_batch(_texts(3), db=db, max_rows=2,
                                                              **FAST)
    assert len(fitted.parts) == 2 and all(r.ok for r in fitted.wait())


def test_batch_prices_are_half_the_list_price_unless_registered() -> None:
    assert pricing.batch_price("anthropic/claude-haiku-4-5") == (0.5, 2.5)
    pricing.register_price("acme-batchy", 2.0, 4.0, batch=(0.2, 0.4))
    try:
        assert pricing.batch_price("acme-batchy-2025") == (0.2, 0.4)
        assert pricing.cost_usd("acme-batchy", Usage(1_000_000, 0), batch=True) == 0.2
        pricing.register_price("acme-batchy", 2.0, 4.0)  # no batch= : back to half
        assert pricing.batch_price("acme-batchy") == (1.0, 2.0)
    finally:
        pricing.register_price("acme-batchy", 0.0, 0.0)
    assert pricing.batch_price("my-finetune") is None
    with pytest.raises(ValueError, match=">= 0"):
        pricing.register_price("x", 1.0, 1.0, batch=(-1.0, 0.0))


@pytest.mark.sim(batch_delay=0.1)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_results_file_larger_than_one_answers_cap_is_downloaded(sim: Simulator, db: str,
                                                                  provider: str) -> None:
    # max_response_bytes bounds one answer; a results file holds thousands of them
    ga.configure(max_response_bytes=2_000)
    agent = at(SentimentAgent, sim.base_url) if provider == "openai" else \
        at(SentimentAgent, sim.anthropic_url, model="anthropic/claude-haiku-4-5")
    results = agent.submit_batch(_texts(40), db=db, **FAST).wait()
    assert sum(r.ok for r in results) == 40
