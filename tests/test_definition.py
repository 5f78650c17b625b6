"""Agent definitions checked when the class is defined; with_options; model strings; ga.summary."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import tenacity
from pydantic import BaseModel

import greenagents as ga
from greenagents import errors, providers
from greenagents.testing import Simulator

from .agents import SentimentAgent


def define(**attributes: Any) -> type[ga.Agent]:
    return type("Defined", (ga.Agent,), {"__module__": __name__, **attributes})


@pytest.mark.parametrize(("attributes", "message"), [
    ({"timeout": "5"}, "Defined.timeout = '5': use a number of seconds"),
    ({"timeout": True}, "Defined.timeout = True"),
    ({"temperature": "hot"}, "Defined.temperature = 'hot': use a number"),
    ({"max_tokens": 1.5}, "Defined.max_tokens = 1.5: use an int"),
    ({"retries": "three"}, "Defined.retries = 'three': use an int >= 0"),
    ({"retries": -1}, "Defined.retries = -1"),
    ({"model": ""}, "Defined.model = '': use a string 'provider/model'"),
    ({"model": 4}, "Defined.model = 4"),
    ({"model": "mistral/large"}, "Defined.model = 'mistral/large': unknown provider 'mistral'"),
    ({"model": "groq:llama-3.1-8b"}, "unknown provider 'groq'"),
    ({"fallbacks": "anthropic/claude-haiku-4-5"}, "mind the trailing comma"),
    ({"fallbacks": (("anthropic/claude-haiku-4-5",),)}, r"Defined.fallbacks\[0\]"),
    ({"fallbacks": ("nope/x",)}, r"Defined.fallbacks\[0\] = 'nope/x': unknown provider"),
    ({"instructions": ["be brief"]}, "Defined.instructions"),
    ({"base_url": 8000}, "Defined.base_url = 8000: use a string"),
    ({"output": "Sentiment"}, "Defined.output = 'Sentiment' is a string, and no 'Sentiment'"),
    ({"output": type("Opaque", (), {})}, "Defined.output = .*Opaque.* cannot be used as an output"),
])
def test_a_bad_attribute_is_a_config_error_naming_it(attributes: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        define(**attributes)


def test_prompt_without_self_or_as_staticmethod_is_caught() -> None:
    def no_self(text: str) -> str:
        return text

    with pytest.raises(errors.ConfigError, match=r"Defined.prompt\(text\) has no `self`"):
        define(prompt=no_self)
    with pytest.raises(errors.ConfigError, match="prompt is a staticmethod; make it a plain"):
        define(prompt=staticmethod(no_self))
    with pytest.raises(errors.ConfigError, match="prompt is a classmethod"):
        define(prompt=classmethod(no_self))
    with pytest.raises(errors.ConfigError, match=r"takes \*texts: name each input"):
        define(prompt=lambda self, *texts: "")


class Mood(BaseModel):
    label: Literal["calm", "tense"]


class MoodAgent(ga.Agent):
    output = "Mood"  # a forward reference to a class defined above: resolved at definition


def test_good_definitions_pass_and_a_string_output_naming_a_class_is_resolved() -> None:
    assert MoodAgent.output is Mood
    define(retries=ga.Retry(max=2), timeout=5, temperature=0, max_tokens=10,
           fallbacks=["openai/gpt-4o", ("anthropic/claude-haiku-4-5", "http://127.0.0.1:1")],
           model="gpt-4o-mini")
    define(retries=tenacity.Retrying(stop=tenacity.stop_after_attempt(2)))


def test_call_never_raises_for_a_definition_that_passed(sim: Simulator) -> None:
    class Raising(ga.Agent):
        base_url = sim.base_url

        def prompt(self, text: str) -> str:
            raise RuntimeError("bug in prompt")

    result = Raising.call(text="x")
    assert isinstance(result.error, RuntimeError) and result.attempts == 0
    assert isinstance(Raising.call(nope="x").error, errors.InputError)


def test_with_options_is_a_checked_subclass_with_the_same_name(sim: Simulator) -> None:
    local = SentimentAgent.with_options(base_url=sim.base_url, timeout=5, retries=0)
    assert issubclass(local, SentimentAgent) and local.timeout == 5
    assert local.__qualname__ == "SentimentAgent" and local.__module__ == SentimentAgent.__module__
    assert SentimentAgent.base_url is None  # the original is untouched
    result = local.call(text="fine")
    assert result.ok and result.target.endswith("agents.SentimentAgent")
    with pytest.raises(errors.ConfigError, match=r"unknown option\(s\) \['tiemout'\]"):
        SentimentAgent.with_options(tiemout=5)
    with pytest.raises(errors.ConfigError, match=r"SentimentAgent\.timeout = 'soon'"):
        SentimentAgent.with_options(timeout="soon")


def test_model_strings() -> None:
    assert providers.split("gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert providers.split("openai:gpt-4o") == ("openai", "gpt-4o")
    assert providers.split("anthropic:claude-haiku-4-5") == ("anthropic", "claude-haiku-4-5")
    assert providers.split("ollama/llama3:8b") == ("ollama", "llama3:8b")
    assert providers.split("llama3:8b") == ("openai", "llama3:8b")  # a served model's own name
    for refused in ("google-gla:gemini-1.5-flash", "mistral:large", "groq/llama"):
        with pytest.raises(errors.ConfigError, match="unknown provider"):
            providers.split(refused)


def test_provider_colon_model_reaches_that_provider(sim: Simulator) -> None:
    class Colon(ga.Agent):
        model = "anthropic:claude-haiku-4-5"
        base_url = sim.anthropic_url

    result = Colon.call(input="hi")
    assert result.ok, result.error
    assert sim.stats()["by_model"] == {"claude-haiku-4-5": 1}


def test_summary_of_agent_results(sim: Simulator) -> None:
    local = SentimentAgent.with_options(base_url=sim.base_url, retries=0)
    results = local.batch([{"text": "good"}, {"text": "bad"}, {"txt": "typo"}],
                          warn_failures=False)
    total = ga.summary(results)
    assert (total.calls, total.ok, total.failed) == (3, 2, 1)
    assert total.prompt_tokens > 0 and total.completion_tokens > 0
    assert total.cost_usd is not None and total.cost_usd > 0
    assert total.p50_s is not None and total.p95_s is not None and total.p50_s <= total.p95_s
    assert [(e.type, e.count) for e in total.errors] == [("InputError", 1)]
    text = str(total)
    assert text.startswith("3 calls: 2 ok, 1 failed; tokens ") and "1 × InputError" in text
    empty = ga.summary([])
    assert (empty.calls, empty.cost_usd, empty.p50_s, str(empty)) == (0, None, None,
                                                                       "0 calls: 0 ok, 0 failed")


def test_the_simulator_says_what_it_serves_at_the_root(sim: Simulator) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(sim.url + "/") as reply:
        index = json.load(reply)
    assert "POST /v1/chat/completions" in index["endpoints"]
