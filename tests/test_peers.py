"""The peers group: other libraries' own clients, unmodified, inside ga.each against the simulator.

instructor, langchain-openai, litellm, dspy and pydantic-ai pin versions that clash with each
other's and ours (litellm wants openai < 3.4), so they live in a venv of their own and this module
runs only with ``-m peers`` (``tox -e peers``, or ``python -m pytest -m peers`` with the venv's
interpreter; see the README). Each library missing from the running interpreter is skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

import greenagents as ga
from greenagents.testing import Simulator

pytestmark = pytest.mark.peers

WIDTH = 50  # calls at once: enough to show concurrency (one by one would take 25 s)


class City(BaseModel):
    name: str
    population: int


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    with Simulator(latency=0.5).start_process() as running:
        yield running


AllOk = Callable[..., list[Any]]


@pytest.fixture
def all_ok(record_property: Callable[[str, object], None]) -> AllOk:
    """Run ``fn`` over WIDTH calls in ``ga.each``; all must succeed. Each run's wall time goes to
    the JUnit XML report as the property ``ga.each s: LABEL`` (bench/peers.py tabulates them)."""

    def run(fn: Callable[[int], Any], label: str) -> list[Any]:
        began = time.perf_counter()
        results = ga.each(range(WIDTH), fn, max_concurrent=WIDTH, timeout=60)
        record_property(f"ga.each s: {label}", round(time.perf_counter() - began, 2))
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        return [r.value for r in results]

    return run


def test_instructor_json_and_tools_modes(sim: Any, all_ok: AllOk) -> None:
    instructor = pytest.importorskip("instructor")
    openai = pytest.importorskip("openai")
    for mode in (instructor.Mode.JSON, instructor.Mode.TOOLS):
        client = instructor.from_openai(openai.OpenAI(base_url=sim.base_url, api_key="sk-test"),
                                        mode=mode)
        values = all_ok(lambda i, client=client: client.chat.completions.create(
            model="gpt-4o-mini", response_model=City, max_retries=0,
            messages=[{"role": "user", "content": f"Describe city {i}"}]), mode.name)
        assert all(isinstance(v, City) for v in values)


def test_langchain_openai_invoke_batch_and_responses(sim: Any, all_ok: AllOk) -> None:
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    model = chat_openai(model="gpt-4o-mini", base_url=sim.base_url, api_key="sk-test")
    assert all(all_ok(lambda i: model.invoke(f"hello {i}").content, "invoke"))
    assert len(model.batch([f"hi {i}" for i in range(5)])) == 5
    responses = chat_openai(model="gpt-4o-mini", base_url=sim.base_url, api_key="sk-test",
                            use_responses_api=True)
    assert all(all_ok(lambda i: responses.invoke(f"hello {i}").text, "Responses API"))


def test_litellm_completion(sim: Any, all_ok: AllOk) -> None:
    litellm = pytest.importorskip("litellm")
    texts = all_ok(lambda i: litellm.completion(
        model="openai/gpt-4o-mini", api_base=sim.base_url, api_key="sk-test",
        messages=[{"role": "user", "content": f"hello {i}"}]).choices[0].message.content,
        "completion")
    assert all(texts)


def test_dspy_chain_of_thought_costs_one_request_per_call(sim: Any, all_ok: AllOk) -> None:
    dspy = pytest.importorskip("dspy")
    dspy.configure(lm=dspy.LM("openai/gpt-4o-mini", api_base=sim.base_url, api_key="sk-test",
                              cache=False))
    predict = dspy.ChainOfThought("question -> answer: int")
    sim.reset()
    answers = all_ok(lambda i: predict(question=f"How many moons, {i}?").answer,
                     "ChainOfThought")
    assert all(isinstance(a, int) for a in answers)
    assert sum(sim.stats()["by_model"].values()) == WIDTH  # no fallback to a JSON re-ask


def test_pydantic_ai_agents_through_the_bridge(sim: Any, all_ok: AllOk) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    models = pytest.importorskip("pydantic_ai.models.openai")
    provider = pytest.importorskip("pydantic_ai.providers.openai").OpenAIProvider(
        base_url=sim.base_url, api_key="sk-test")
    for model_class in (models.OpenAIChatModel, models.OpenAIResponsesModel):
        agent = pydantic_ai.Agent(model_class("gpt-4o-mini", provider=provider), output_type=City)
        outputs = all_ok(lambda i, agent=agent: ga.run_async(agent.run, f"city {i}").output,
                         model_class.__name__)
        assert all(isinstance(o, City) for o in outputs)


def test_pydantic_ai_run_sync_in_greenlets_names_the_bridge(sim: Any) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    models = pytest.importorskip("pydantic_ai.models.openai")
    provider = pytest.importorskip("pydantic_ai.providers.openai").OpenAIProvider(
        base_url=sim.base_url, api_key="sk-test")
    agent = pydantic_ai.Agent(models.OpenAIChatModel("gpt-4o-mini", provider=provider))
    results = ga.each(range(10), lambda i: agent.run_sync(f"hi {i}"), max_concurrent=10, timeout=60)
    failed = [r.error for r in results if not r.ok]
    assert failed, "run_sync in greenlets no longer clashes: update the README's pitfall"
    assert all("ga.run_async" in str(error) for error in failed), failed[:2]
