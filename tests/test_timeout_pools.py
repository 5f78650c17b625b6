"""Calls stopped by ga's timeout= must not leave other libraries' connection pools broken.

A timeout is delivered as ``gevent.Timeout`` at the blocking point the call is waiting at (a
socket read, a lock, a pool's "wait for a connection" event), and the library's ``finally`` and
``except BaseException`` blocks run as for any exception. httpcore 1.x (under httpx) mishandles
one such point: a request that another request's cleanup had just given a *new* connection, and
that is stopped before it connects, leaves that connection in the pool forever, neither connected
nor closed. httpcore2 (httpx2, which the openai and anthropic SDKs use) drops such connections.
``ga.doctor()`` warns about httpcore 1.x; these tests keep that warning honest and re-check the
SDKs after a timed-out batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

import greenagents as ga
from greenagents.testing import Simulator

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _timed_out_then_healthy(call: Callable[[int], Any]) -> list[ga.Result[Any]]:
    """A batch stopped by timeout= mid-flight, then the same calls again without a timeout."""
    stopped = ga.each(range(120), call, max_concurrent=120, timeout=0.3)
    assert not any(r.ok for r in stopped)
    return ga.each(range(20), call, max_concurrent=20, timeout=20)  # within 20 connections


@pytest.mark.sim(latency=1.0)
def test_httpcore_1_leaks_pool_slots_as_doctor_warns(sim: Simulator) -> None:
    if ga.doctor().versions.get("httpcore", "").split(".")[0] != "1":
        pytest.skip("httpcore 1.x is not installed")
    client = httpx.Client(limits=httpx.Limits(max_connections=20), timeout=httpx.Timeout(30, pool=1))
    url = f"{sim.base_url}/chat/completions"
    after = _timed_out_then_healthy(lambda _: client.post(url, json=CHAT).status_code)
    assert all(isinstance(r.error, httpx.PoolTimeout) for r in after)  # every slot stuck
    assert not next(f for f in ga.doctor().findings if f.name == "httpcore").ok


def _httpx2(sim: Simulator) -> Callable[[int], Any]:
    client = httpx2.Client(limits=httpx2.Limits(max_connections=20), timeout=httpx2.Timeout(30, pool=1))
    return lambda _: client.post(f"{sim.base_url}/chat/completions", json=CHAT).status_code


def _openai(sim: Simulator) -> Callable[[int], Any]:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    return lambda _: client.chat.completions.create(**CHAT).choices[0].message.content  # type: ignore[call-overload]


def _anthropic(sim: Simulator) -> Callable[[int], Any]:
    client = anthropic.Anthropic(base_url=sim.anthropic_url, api_key="sk-test", max_retries=0)
    return lambda _: client.messages.create(model="claude-haiku-4-5", max_tokens=50,
                                            messages=[{"role": "user", "content": "hi"}]).content


def _langchain(sim: Simulator) -> Callable[[int], Any]:
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    model = chat_openai(model="gpt-4o-mini", base_url=sim.base_url, api_key="sk-test", max_retries=0)
    return lambda _: model.invoke("hi").content


@pytest.mark.sim(latency=1.0)
@pytest.mark.parametrize("make", [_httpx2, _openai, _anthropic, _langchain],
                         ids=["httpx2", "openai", "anthropic", "langchain-openai"])
def test_clients_work_after_a_timed_out_batch(sim: Simulator, make: Callable[..., Any]) -> None:
    after = _timed_out_then_healthy(make(sim))
    assert all(r.ok for r in after), [r.error for r in after if not r.ok][:3]
