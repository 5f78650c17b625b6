"""ga.Client: two tenants in one process share nothing they should not; the module functions act
on the current client. Real simulators over 127.0.0.1, each checking its tenant's API key."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import gevent
import pytest

import greenagents as ga
from greenagents import budgets, config, limits, state, tracking
from greenagents.errors import BudgetExceeded, ConfigError
from greenagents.testing import Simulator

from .agents import SentimentAgent, SummaryAgent
from .conftest import run_python

KEY_A, KEY_B = "sk-tenant-a-0123456789", "sk-tenant-b-9876543210"


def tenant(sim: Simulator, key: str, log: Path, **settings: object) -> ga.Client:
    return ga.Client(api_keys={"openai": key}, base_urls={"openai": sim.base_url},
                     tracking=f"sqlite:///{log}", retries=0, **settings)


def logged(log: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(log) as db:
        return db.execute("SELECT status, error_class FROM calls").fetchall()


def spent(client: ga.Client) -> float:
    with client.use():
        return budgets.active()[0].spent_usd


def test_two_tenants_at_once_keep_their_keys_limits_logs_and_budgets(
        sim_factory: Callable[..., Simulator], tmp_path: Path) -> None:
    sim_a, sim_b = sim_factory(api_key=KEY_A), sim_factory(api_key=KEY_B)  # 401 for another key
    a = tenant(sim_a, KEY_A, tmp_path / "a.db", max_cost_usd=1.0)
    b = tenant(sim_b, KEY_B, tmp_path / "b.db", max_cost_usd=1.0)
    a.rate_limit("openai", rpm=10)
    runs = [gevent.spawn(a.batch, [(SentimentAgent, {"text": f"a{i}"}) for i in range(10)]),
            gevent.spawn(b.batch, [(SentimentAgent, {"text": f"b{i}"}) for i in range(40)])]
    results_a, results_b = (run.get(timeout=60) for run in runs)

    assert all(r.ok for r in results_a + results_b), [r.error for r in results_a + results_b]
    assert sim_a.stats()["requests"] == 10 and sim_b.stats()["requests"] == 40
    assert a.flush(10) and b.flush(10)
    assert logged(tmp_path / "a.db") == [("ok", None)] * 10
    assert logged(tmp_path / "b.db") == [("ok", None)] * 40
    assert spent(a) == pytest.approx(sum(r.cost_usd or 0 for r in results_a), abs=1e-6)
    assert spent(b) == pytest.approx(sum(r.cost_usd or 0 for r in results_b), abs=1e-6)
    assert ga.settings().tracking is None  # the test's own (default) client logs nothing

    # A spent its 10 requests a minute; B, without a limit, is not held back by A's
    waiting = a.spawn(a.call, SentimentAgent, text="one more")
    assert all(r.ok for r in b.batch([(SentimentAgent, {"text": "b"})] * 20))
    assert not waiting.ready() and sim_a.stats()["requests"] == 10
    waiting.kill()
    a.close()
    b.close()


def test_a_tenant_out_of_budget_stops_only_its_own_calls(
        sim_factory: Callable[..., Simulator], tmp_path: Path) -> None:
    sim_a, sim_b = sim_factory(api_key=KEY_A), sim_factory(api_key=KEY_B)
    with tenant(sim_a, KEY_A, tmp_path / "a.db", max_cost_usd=1e-9) as poor, \
            tenant(sim_b, KEY_B, tmp_path / "b.db") as rich:
        runs = [gevent.spawn(client.batch, [(SentimentAgent, {"text": "x"})] * 5,
                             warn_failures=False) for client in (poor, rich)]
        refused, answered = (run.get(timeout=60) for run in runs)
    assert all(isinstance(r.error, BudgetExceeded) for r in refused)
    assert all(r.ok for r in answered)
    assert sim_a.stats()["requests"] == 0 and sim_b.stats()["requests"] == 5
    assert logged(tmp_path / "a.db") == [("error", "BudgetExceeded")] * 5  # closing flushed


def test_a_key_reaches_only_its_tenants_server_and_never_a_repr(
        sim_factory: Callable[..., Simulator], tmp_path: Path) -> None:
    sim_b = sim_factory(api_key=KEY_B)
    wrong = tenant(sim_b, KEY_A, tmp_path / "a.db")  # A's key sent to B's server
    result = wrong.call(SentimentAgent, text="x")
    assert isinstance(result.error, ga.errors.AuthError)
    assert "api_keys['openai']" in str(result.error)  # where the key came from, not the key
    for shown in (repr(wrong), str(wrong.settings), repr(wrong.settings), str(result.error),
                  repr(result)):
        assert KEY_A not in shown
    assert repr(wrong).startswith("Client(") and "api_keys={'openai': '***'}" in repr(wrong)
    wrong.close()
    assert logged(tmp_path / "a.db") == [("error", "AuthError")]
    files = b"".join(path.read_bytes() for path in tmp_path.glob("a.db*"))  # WAL included
    assert KEY_A.encode() not in files  # nor the execution log


def test_the_module_functions_act_on_the_active_client(sim: Simulator, tmp_path: Path) -> None:
    client = ga.Client(base_urls={"openai": sim.base_url}, max_concurrency=7,
                       tracking=f"sqlite:///{tmp_path / 'runs.db'}")
    assert ga.settings().max_concurrency == 20
    with client:  # active in the block, closed (log flushed) at its end
        assert ga.settings().max_concurrency == 7
        ga.configure(retries=1)
        ga.rate_limit("openai", rpm=1000)
        results = SentimentAgent.batch([{"text": "a"}, {"text": "b"}])
        assert ga.spawn(lambda: ga.settings().retries).get() == 1  # greenlets inherit it
    assert all(r.ok for r in results) and len(logged(tmp_path / "runs.db")) == 2
    assert client.settings.retries == 1 and ga.settings().retries == 3
    with client.use():
        assert list(state.current().part(limits.RateLimits).budgets) == ["openai"]
    assert not state.current().part(limits.RateLimits).budgets


def test_the_verbs_of_a_client(sim: Simulator) -> None:
    client = ga.Client(base_urls={"openai": sim.base_url, "anthropic": sim.anthropic_url})
    assert client.call(SentimentAgent, text="hi").ok
    assert "In at most 20 words: hi" in client.run(SummaryAgent, text="hi")
    assert client.call(divmod, 7, 2).value == (3, 1)
    assert isinstance(client.call(int, "x").error, ValueError)
    with pytest.raises(ValueError):
        client.run(int, "x")
    assert [r.ok for r in SentimentAgent.each(["a", "b"], client=client)] == [True, True]
    assert sorted(r.value for r in client.stream([(abs, (-1,), {}), (abs, (-2,), {})])) == [1, 2]
    assert client.spawn(lambda: ga.settings().base_urls["openai"]).get() == sim.base_url
    assert "openai" not in ga.settings().base_urls  # nothing leaked into the caller's context


def test_a_stream_belongs_to_its_client_wherever_it_is_read(sim: Simulator,
                                                            tmp_path: Path) -> None:
    client = ga.Client(base_urls={"openai": sim.base_url, "anthropic": sim.anthropic_url},
                       tracking=f"sqlite:///{tmp_path / 'runs.db'}")
    answer = client.stream(SummaryAgent, text="read later")  # read outside any `with`
    assert "".join(answer) == answer.result.value and answer.result.ok
    stream_of_results = client.stream([(SentimentAgent, {"text": "x"})] * 3)
    assert all(result.ok for result in stream_of_results)
    client.close()
    assert len(logged(tmp_path / "runs.db")) == 4


def test_clients_are_checked_where_they_are_made() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*max_concurrent\b"):
        ga.Client(max_concurrent=5)
    with pytest.raises(ConfigError, match=r"invalid setting in ga\.Client\(\): timeout"):
        ga.Client(timeout="5")
    with pytest.raises(ConfigError, match=r"process-wide.*ga\.configure\(otel=\.\.\.\)"):
        ga.Client(otel=True)
    with ga.Client().use(), pytest.raises(ConfigError, match="process-wide"):
        ga.configure(prometheus=True)
    typo = ga.Client(api_keys={"opneai": "sk-x"})
    assert "opneai" in str(typo.call(SentimentAgent, text="x").error)


def test_settings_come_from_the_environment_through_pydantic_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENAGENTS_BASE_URLS", '{"openai": "http://127.0.0.1:9/v1"}')
    monkeypatch.setenv("GREENAGENTS_RETRIES", "none")
    with pytest.raises(ConfigError, match="retries"):
        ga.Client().configure()  # reads the environment
    monkeypatch.setenv("GREENAGENTS_RETRIES", "2")
    assert ga.Client().settings.base_urls == {"openai": "http://127.0.0.1:9/v1"}
    assert ga.Client(retries=4).settings.retries == 4  # arguments win over the environment
    monkeypatch.setenv("GREENAGENTS_API_KEYS", "sk-not-json")
    with pytest.raises(ConfigError, match=r"api_keys: .*JSON") as refused:
        ga.Client().configure()
    assert "sk-not-json" not in str(refused.value)


def test_worker_settings_read_the_celery_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENAGENTS_CELERY_URL", "redis://127.0.0.1:1/2")
    monkeypatch.setenv("GREENAGENTS_CELERY_TASKS", "a:B, c:D")
    monkeypatch.setenv("GREENAGENTS_RATE_LIMITS", '{"openai": {"rpm": 5}}')
    worker = config.worker_settings()
    assert (worker.celery_url, worker.tasks(), worker.rate_limits) == \
        ("redis://127.0.0.1:1/2", ["a:B", "c:D"], {"openai": {"rpm": 5}})
    monkeypatch.setenv("GREENAGENTS_RATE_LIMITS", "{oops")
    with pytest.raises(ConfigError, match=r"rate_limits: .*expected JSON such as GREENAGENTS_RATE_LIMITS="):
        config.worker_settings()


def test_a_closed_client_reopens_and_keeps_what_it_was_told(sim: Simulator,
                                                            tmp_path: Path) -> None:
    client = ga.Client(base_urls={"openai": sim.base_url},
                       tracking=f"sqlite:///{tmp_path / 'runs.db'}")
    client.rate_limit("openai", rpm=1000)
    assert client.call(SentimentAgent, text="x").ok
    client.close()
    assert client.call(SentimentAgent, text="y").ok  # new pools, a new writer
    client.close()
    assert len(logged(tmp_path / "runs.db")) == 2
    with client.use():
        assert list(state.current().part(limits.RateLimits).budgets) == ["openai"]
    assert tracking.flush(5)


def test_unpatched_the_threads_of_a_run_see_its_client() -> None:
    done = run_python("""
        import warnings
        warnings.simplefilter("ignore")
        import greenagents as ga
        client = ga.Client(max_concurrency=3)
        print([r.value for r in client.each([1, 2], lambda n: ga.settings().max_concurrency)],
              ga.available())
    """)
    assert done.stdout.strip() == "[3, 3] False", done.stderr


def test_a_rate_limit_made_directly_is_in_force_for_the_client_it_was_made_under() -> None:
    """It used to be built and then ignored: only ``ga.rate_limit`` put a budget in force."""
    tenant = ga.Client()
    with tenant.use():
        made = ga.RateLimit("openai/gpt-4o-mini", rpm=30)
        assert limits.configured("openai", "gpt-4o-mini") == [made]
    assert limits.configured("openai", "gpt-4o-mini") == []  # the default client has none
