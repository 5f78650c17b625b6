"""Agents over real HTTP against the simulator: both providers, structured output, re-ask, usage."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import pytest

import greenagents as ga
from greenagents import errors
from greenagents.testing import Simulator

from .agents import Sentiment, SentimentAgent, SummaryAgent, at


def test_structured_agent_on_openai(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.base_url)
    result = agent.call(text="I love this!")
    assert result.ok, result.error
    assert isinstance(result.value, Sentiment)
    assert result.target == "tests.agents.SentimentAgent"
    assert result.model == "openai/gpt-4o-mini" and result.attempts == 1
    assert result.usage is not None and result.usage.prompt_tokens > 0
    assert result.cost_usd is not None and result.cost_usd > 0
    assert agent.run(text="I love this!") == result.value  # deterministic simulator


def test_text_agent_on_anthropic(sim: Simulator) -> None:
    result = at(SummaryAgent, sim.anthropic_url).call(text="The cat sat on the mat.", words=5)
    assert result.ok, result.error
    assert isinstance(result.value, str) and result.value
    assert result.model == "anthropic/claude-haiku-4-5"
    assert result.cost_usd is not None


def test_structured_agent_on_anthropic_uses_a_forced_tool(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.anthropic_url, model="anthropic/claude-haiku-4-5")
    assert isinstance(agent.run(text="meh"), Sentiment)


def test_non_model_output_types_travel_wrapped(sim: Simulator) -> None:
    class Tags(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = sim.base_url
        output = list[Literal["a", "b", "c"]]

    tags = Tags.run("tag this")
    assert isinstance(tags, list) and set(tags) <= {"a", "b", "c"}


def test_prompt_may_return_messages_with_images(sim: Simulator) -> None:
    class Look(ga.Agent):
        model = "openai/gpt-4o-mini"
        base_url = sim.base_url

        def prompt(self, url: str) -> list[dict[str, Any]]:
            return [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi, what shall I look at?"},
                {"role": "user", "content": [{"type": "text", "text": "Describe this"},
                                             {"type": "image_url", "image_url": {"url": url}}]},
            ]

    assert Look.call(url="http://127.0.0.1/cat.png").ok


@pytest.mark.parametrize(("args", "kwargs", "fragment"), [
    ((), {}, "input 'text': Field required"),
    ((), {"txt": "hi"}, "unknown input(s) ['txt']"),
    ((), {"text": ["not", "a", "string"]}, "input 'text'"),
    (("a", "b"), {}, "too many positional arguments"),
])
def test_bad_inputs_fail_before_any_request(sim: Simulator, args: tuple[Any, ...],
                                            kwargs: dict[str, Any], fragment: str) -> None:
    result = at(SentimentAgent, sim.base_url).call(*args, **kwargs)
    assert isinstance(result.error, errors.InputError)
    assert fragment in str(result.error)
    assert result.attempts == 0
    assert sim.stats()["requests"] == 0


def test_prompt_defaults_and_coercion(sim: Simulator) -> None:
    class Count(ga.Agent):
        base_url = sim.base_url

        def prompt(self, n: int, unit: str = "apples") -> str:
            assert isinstance(n, int)
            return f"{n} {unit}"

    assert Count.call(n="3").ok  # pydantic coerces "3" to 3 (lax mode, like FastAPI)


@pytest.mark.sim(faults={"schema_invalid": 0.5})
def test_invalid_answers_are_reasked_and_usage_sums_over_attempts(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.base_url, retries=8)
    results = ga.batch([(agent, {"text": f"review {i}"}) for i in range(40)])
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    reasked = [r for r in results if r.attempts > 1]
    assert reasked, "a 50% fault rate must have hit some first attempts"
    assert all(h.error == "InvalidOutput" for r in reasked for h in r.history[:-1])
    stats = sim.stats()
    assert sum(r.attempts for r in results) == stats["requests"]
    total = sum(r.usage.total_tokens for r in results if r.usage)
    assert total == stats["prompt_tokens"] + stats["completion_tokens"]


@pytest.mark.sim(faults={"schema_invalid": 1.0})
def test_answer_that_never_validates_is_an_output_error(sim: Simulator) -> None:
    result = at(SentimentAgent, sim.base_url, retries=2).call(text="x")
    assert isinstance(result.error, errors.OutputError)
    assert "does not fit Sentiment" in str(result.error)
    assert result.attempts == 3


@pytest.mark.sim(latency=1.0)
def test_a_thousand_agent_calls_at_a_thousand_wide(sim: Simulator) -> None:
    agent = at(SentimentAgent, sim.base_url)
    start = time.monotonic()
    results = ga.batch([(agent, {"text": f"t{i}"}) for i in range(1000)], max_concurrent=1000)
    elapsed = time.monotonic() - start
    assert sum(r.ok for r in results) == 1000
    assert [r.index for r in results] == list(range(1000))
    assert sim.stats()["peak_in_flight"] > 500
    assert elapsed < 60  # one by one: 1,000 s


def test_bound_holds_against_a_real_server(sim: Simulator) -> None:
    agent = at(SummaryAgent, sim.anthropic_url)
    sim.reset()
    results = ga.batch([(agent, {"text": f"t{i}"}) for i in range(60)], max_concurrent=7)
    assert all(r.ok for r in results)
    assert sim.stats()["peak_in_flight"] <= 7


def test_missing_key_for_a_public_provider_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = SentimentAgent.call(text="hi")
    assert isinstance(result.error, errors.ConfigError)
    assert "OPENAI_API_KEY" in str(result.error)


def test_errors_are_reachable_from_the_package() -> None:
    assert ga.errors.RateLimited is errors.RateLimited
    assert issubclass(errors.RateLimited, errors.ProviderError)


SECRET = "sk-test-SECRET0123"  # key-shaped, not a real one


@pytest.mark.sim(api_key=SECRET, faults={"server_error": 0.3})
def test_api_keys_never_leak(sim: Simulator, monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    good = at(SentimentAgent, sim.base_url, retries=0)
    outcomes = ga.batch([(good, {"text": f"t{i}"}) for i in range(20)])
    assert any(r.ok for r in outcomes) and any(not r.ok for r in outcomes)  # 200s and 500s
    monkeypatch.setenv("OPENAI_API_KEY", SECRET[::-1])
    denied = good.call(text="t")
    assert isinstance(denied.error, errors.AuthError) and "OPENAI_API_KEY" in str(denied.error)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    slow = at(SentimentAgent, sim.base_url, retries=0, timeout=0.2).call(text="t")
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    from greenagents import providers
    texts = [repr(r) for r in [*outcomes, denied, slow]] + [str(r.error) for r in outcomes]
    texts += [repr(denied.error), str(denied.error), repr(providers.resolve("gpt-4o-mini"))]
    texts += [record.getMessage() for record in caplog.records]
    assert not [t for t in texts if SECRET in t or SECRET[::-1] in t]


def test_agent_definition_mistakes_are_that_calls_error(sim: Simulator) -> None:
    class Buggy(ga.Agent):
        base_url = sim.base_url

        def prompt(self, text: str) -> str:
            raise KeyError("a bug in prompt()")

    class WrongReturn(ga.Agent):
        base_url = sim.base_url

        def prompt(self, text: str) -> str:
            return 42  # type: ignore[return-value]

    results = ga.batch([(Buggy, {"text": "x"}), (WrongReturn, {"text": "x"}),
                        (at(SummaryAgent, sim.anthropic_url), {"text": "x"})])
    assert isinstance(results[0].error, KeyError)
    assert isinstance(results[1].error, errors.ConfigError) and "returned int" in str(results[1].error)
    assert results[2].ok
    assert sim.stats()["requests"] == 1
