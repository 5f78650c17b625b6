"""The response cache and in-flight dedupe, over real HTTP against the simulator (and a real Redis)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import greenagents as ga
from greenagents import cache, tracking
from greenagents.testing import Simulator

from .agents import Sentiment, SentimentAgent, SummaryAgent, at


@pytest.fixture
def cache_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cache.db'}"


def requests_sent(sim: Simulator) -> int:
    return int(sim.stats()["requests"])


def test_a_hit_sends_nothing_keeps_usage_and_costs_zero(sim: Simulator, cache_url: str) -> None:
    ga.configure(cache=cache_url)
    agent = at(SentimentAgent, sim.base_url)
    first = agent.call(text="I love this!")
    second = agent.call(text="I love this!")
    assert first.ok and not first.cached and first.cost_usd and first.cost_usd > 0
    assert second.ok and second.cached and second.cost_usd == 0.0
    assert isinstance(second.value, Sentiment) and second.value == first.value
    assert second.usage == first.usage and second.model == first.model
    assert second.attempts == 0 and requests_sent(sim) == 1


def test_agent_opt_in_and_opt_out(sim: Simulator, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # cache=True with no setting uses .greenagents/cache.db here
    opted = at(SummaryAgent, sim.anthropic_url, cache=True)
    assert opted.call(text="a").ok and opted.call(text="a").cached
    assert (tmp_path / ".greenagents" / "cache.db").exists()
    plain = at(SummaryAgent, sim.anthropic_url)
    assert not plain.call(text="b").cached and not plain.call(text="b").cached
    ga.configure(cache=cache.DEFAULT_URL)
    out = at(SummaryAgent, sim.anthropic_url, cache=False)
    assert not out.call(text="c").cached and not out.call(text="c").cached
    assert requests_sent(sim) == 5


@pytest.mark.sim(faults={"server_error": 1.0})
def test_only_successful_answers_are_stored(sim: Simulator, cache_url: str) -> None:
    ga.configure(cache=cache_url, retries=0)
    agent = at(SentimentAgent, sim.base_url)
    assert not agent.call(text="x").ok and not agent.call(text="x").ok
    assert requests_sent(sim) == 2


class Loose(BaseModel):
    label: str


def _key(agent: type[ga.Agent], **inputs: Any) -> str:
    messages = agent._messages(agent._inputs().validate((), inputs))
    return cache.key_for(agent, messages, agent._endpoints(), agent._output_spec().schema)


PNG = base64.b64encode(b"\x89PNG fake image bytes").decode()


def _image_prompt(image: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}]}]


@pytest.mark.parametrize("change", [
    "provider", "base_url", "model", "system_prompt", "user_message", "image", "output_schema",
    "temperature", "max_tokens", "other_sampling", "fallback", "namespace"])
def test_every_input_of_the_answer_changes_the_key(change: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")

    class Base(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = "http://127.0.0.1:9/v1"
        instructions = "Be brief."

        def prompt(self, text: str, image: str = "") -> Any:
            return _image_prompt(image) if image else text

    inputs: dict[str, Any] = {"text": "hello", "image": PNG if change == "image" else ""}
    changed_inputs = dict(inputs)
    attributes: dict[str, Any] = {
        "provider": {"model": "anthropic/gpt-4o-mini"},
        "base_url": {"base_url": "http://127.0.0.1:10/v1"},
        "model": {"model": "openai/gpt-4o"},
        "system_prompt": {"instructions": "Be verbose."},
        "output_schema": {"output": Loose},
        "temperature": {"temperature": 0.7},
        "max_tokens": {"max_tokens": 10},
        "other_sampling": {"top_p": 0.5},
        "fallback": {"fallbacks": ("openai/gpt-4o",)},
    }.get(change, {})
    if change == "user_message":
        changed_inputs["text"] = "hello!"
    if change == "image":
        changed_inputs["image"] = base64.b64encode(b"\x89PNG other image bytes").decode()
    before = _key(Base, **inputs)
    if change == "namespace":
        ga.configure(cache_namespace="tenant-b")
    assert _key(type("Changed", (Base,), attributes), **changed_inputs) != before
    assert _key(Base, **inputs) == before or change == "namespace"  # deterministic


def test_the_api_key_is_not_in_the_key(monkeypatch: Any) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-one")
    first = _key(SentimentAgent, text="hi")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-two")
    assert _key(SentimentAgent, text="hi") == first


@pytest.mark.sim(latency=0.5)
def test_a_thousand_identical_calls_send_one_request(sim: Simulator, cache_url: str) -> None:
    ga.configure(cache=cache_url, max_concurrency=1000)
    agent = at(SentimentAgent, sim.base_url)
    results = ga.batch([(agent, {"text": "same"})] * 1000)
    assert all(r.ok for r in results)
    assert requests_sent(sim) == 1
    (paid,) = [r for r in results if not r.cached]
    assert sum(r.cost_usd or 0 for r in results) == paid.cost_usd  # no double cost


@pytest.mark.sim(latency=0.2)
def test_without_cache_identical_calls_are_all_sent(sim: Simulator) -> None:
    results = ga.batch([(at(SentimentAgent, sim.base_url), {"text": "same"})] * 20)
    assert all(r.ok and not r.cached for r in results) and requests_sent(sim) == 20


@pytest.mark.sim(latency=0.3, faults={"server_error": 1.0})
def test_waiters_of_a_failed_call_send_their_own(sim: Simulator, cache_url: str) -> None:
    ga.configure(cache=cache_url, retries=0)
    results = ga.batch([(at(SentimentAgent, sim.base_url), {"text": "same"})] * 5)
    assert not any(r.ok for r in results) and requests_sent(sim) == 5


def test_entries_expire_after_the_agent_ttl(sim: Simulator, cache_url: str) -> None:
    ga.configure(cache=cache_url)
    agent = at(SentimentAgent, sim.base_url, cache=0.3)
    assert not agent.call(text="t").cached and agent.call(text="t").cached
    time.sleep(0.4)
    assert not agent.call(text="t").cached and requests_sent(sim) == 2


def test_a_bad_cache_url_is_the_calls_error_naming_the_fix(sim: Simulator) -> None:
    ga.configure(cache="memcached://x")
    result = at(SentimentAgent, sim.base_url).call(text="x")
    assert isinstance(result.error, ga.errors.ConfigError)
    assert "sqlite:///" in str(result.error) and requests_sent(sim) == 0


def test_an_unwritable_store_warns_once_and_calls_go_through(sim: Simulator, tmp_path: Path,
                                                             cache_url: str) -> None:
    ga.configure(cache=cache_url)
    agent = at(SentimentAgent, sim.base_url)
    assert agent.call(text="warm").ok
    (tmp_path / "cache.db").unlink()
    (tmp_path / "cache.db").mkdir()  # the file became a directory: every read fails
    with pytest.warns(cache.CacheWarning, match="cache=None"):
        results = [agent.call(text="warm") for _ in range(3)]
    assert all(r.ok and not r.cached for r in results)


def test_hits_and_saved_cost_reach_the_log_and_stats(sim: Simulator, tmp_path: Path,
                                                     cache_url: str) -> None:
    db = tmp_path / "runs.db"
    ga.configure(cache=cache_url, tracking=f"sqlite:///{db}")
    agent = at(SentimentAgent, sim.base_url)
    paid = agent.call(text="log me")
    for _ in range(3):
        agent.call(text="log me")
    tracking.flush()
    (group,) = tracking.summary(str(db))
    assert group["calls"] == 4 and group["cached"] == 3
    assert group["cost_usd"] == pytest.approx(paid.cost_usd)
    assert group["saved_usd"] == pytest.approx(3 * (paid.cost_usd or 0))


REDIS = shutil.which("redis-server")



@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
def test_redis_store_shares_answers_and_expires_them(sim: Simulator, redis_url: str) -> None:
    ga.configure(cache=redis_url)
    agent = at(SentimentAgent, sim.base_url)
    assert not agent.call(text="r").cached and agent.call(text="r").cached
    with ga.Client(cache=redis_url) as worker:  # as another worker: the same Redis
        assert worker.call(agent, text="r").cached and requests_sent(sim) == 1
    short = at(SentimentAgent, sim.base_url, cache=0.2)
    assert not short.call(text="s").cached and short.call(text="s").cached
    time.sleep(0.3)
    assert not short.call(text="s").cached and requests_sent(sim) == 3


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
@pytest.mark.sim(latency=3.0)
def test_identical_calls_in_two_processes_send_one_request(sim: Simulator, redis_url: str) -> None:
    ga.configure(cache=redis_url)
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import greenagents.monkey
        import time
        import urllib3
        import greenagents as ga
        from greenagents import cache, providers
        ga.configure(cache={redis_url!r})
        cache.store_for({redis_url!r}).get("warm")  # connected and imported: the calls overlap
        class Agent(ga.Agent):
            model = "openai/gpt-4o-mini"
            base_url = {sim.base_url!r}
        print("ready", flush=True)
        began = time.monotonic()
        result = Agent.call(input="the same question")
        print(result.ok, result.cached, began, time.monotonic(), flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"

    class Agent(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = sim.base_url

    began = time.monotonic()
    here = Agent.call(input="the same question")
    ended = time.monotonic()
    ok, cached, there_began, there_ended = worker.stdout.readline().split()
    worker.wait(timeout=30)
    assert float(there_began) < ended and began < float(there_ended)  # they ran at once
    assert here.ok and ok == "True" and requests_sent(sim) == 1
    assert sorted([here.cached, cached == "True"]) == [False, True]  # one asked, one waited


def test_the_tools_offered_change_the_key(monkeypatch: Any) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    messages = SentimentAgent._messages({"text": "hi"})
    endpoints, schema = SentimentAgent._endpoints(), SentimentAgent._output_spec().schema
    plain = cache.key_for(SentimentAgent, messages, endpoints, schema)
    tooled = cache.key_for(SentimentAgent, messages, endpoints, schema, [{"name": "get_weather"}])
    assert plain != tooled


def test_summary_counts_hits_and_the_cost_they_saved(sim: Simulator, cache_url: str) -> None:
    ga.configure(cache=cache_url)
    agent = at(SentimentAgent, sim.base_url)
    first = agent.call(text="I love this!")
    results = [first, *ga.each(["I love this!"] * 3, agent)]
    totals = ga.summary(results)
    assert [r.cached for r in results] == [False, True, True, True]
    assert totals.cached == 3 and first.cost_usd
    assert totals.saved_usd == pytest.approx(3 * first.cost_usd)
    assert totals.cost_usd == pytest.approx(first.cost_usd)
    assert f"3 cached (saved ${totals.saved_usd:.6f})" in str(totals)
    assert ga.summary([first]).cached == 0 and "cached" not in str(ga.summary([first]))


def test_a_bad_cache_attribute_fails_at_the_class_naming_the_fix() -> None:
    with pytest.raises(ga.errors.ConfigError, match=r"Daily.cache = '1d': use True, False, None"):
        class Daily(ga.Agent):
            cache = "1d"  # type: ignore[assignment]
    assert SummaryAgent.with_options(cache=60).cache == 60
