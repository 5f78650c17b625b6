"""ga.run_async / ga.async_to_sync: asyncio code from greenlets, on one loop in a real thread."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import gevent
import httpx
import openai
import pytest

import greenagents as ga
from greenagents.asyncbridge import HINT
from greenagents.testing import Simulator

from .conftest import run_python

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def _double(n: int, *, extra: int = 0) -> int:
    await asyncio.sleep(0.01)
    return 2 * n + extra


def test_awaitables_and_async_functions_with_arguments() -> None:
    assert ga.run_async(_double(3)) == 6
    assert ga.run_async(_double, 3, extra=1) == 7
    assert ga.async_to_sync(_double)(5) == 10
    with pytest.raises(TypeError, match="takes no arguments"):
        ga.run_async(asyncio.sleep(0), 1)


def test_the_callers_contextvars_reach_the_coroutine() -> None:
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")

    async def read() -> str:
        return tenant.get()

    tenant.set("acme")
    assert ga.run_async(read) == "acme"
    assert [r.value for r in ga.each(range(2), ga.async_to_sync(lambda _: read()))] == ["acme"] * 2


def test_200_greenlets_await_at_once_and_the_hub_keeps_running() -> None:
    ticks: list[float] = []
    ticker = gevent.spawn(lambda: [ticks.append(time.monotonic()) or gevent.sleep(0.05)
                                   for _ in range(10)])
    started = time.monotonic()
    results = ga.each(range(200), ga.async_to_sync(lambda n: asyncio.sleep(1, result=n)),
                      max_concurrent=200)
    assert [r.value for r in results] == list(range(200))
    assert time.monotonic() - started < 30  # one by one: 200 s
    ticker.join()
    assert len(ticks) == 10  # other greenlets ran while all 200 waited


def test_httpx_async_client_and_async_openai_200_wide() -> None:
    with Simulator(latency=1.0).start_process() as sim:  # its own process: 200 connections at once
        _call_200_wide(sim)


def _call_200_wide(sim: Any) -> None:
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=200))
    sdk = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test")

    async def raw(_: int) -> int:
        response = await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
        return response.status_code

    async def official(_: int) -> str | None:
        answer = await sdk.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        return answer.choices[0].message.content  # type: ignore[no-any-return]

    for fn in (raw, official):
        started = time.monotonic()
        results = ga.each(range(200), ga.async_to_sync(fn), max_concurrent=200)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        assert time.monotonic() - started < 60  # one by one: 200 s
    assert sim.stats()["peak_in_flight"] > 50


def _cancellable() -> tuple[list[str], Any]:
    seen: list[str] = []

    async def slow(_: Any = None) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    return seen, slow


def _eventually(condition: Any) -> bool:
    for _ in range(100):
        if condition():
            return True
        gevent.sleep(0.02)
    return False


def test_a_timed_out_call_cancels_its_task() -> None:
    seen, slow = _cancellable()
    results = ga.each(range(3), ga.async_to_sync(slow), timeout=0.2)
    assert all(isinstance(r.error, ga.errors.Timeout) for r in results)
    assert _eventually(lambda: seen == ["cancelled"] * 3)


def test_a_killed_greenlet_cancels_its_task() -> None:
    seen, slow = _cancellable()
    waiting = gevent.spawn(ga.run_async, slow)
    gevent.sleep(0.1)
    waiting.kill()
    assert _eventually(lambda: seen == ["cancelled"])


def test_the_tasks_error_and_cancellation_surface_in_the_greenlet() -> None:
    async def fails() -> None:
        raise ValueError("from asyncio")

    async def cancelled() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await asyncio.sleep(1)

    with pytest.raises(ValueError, match="from asyncio"):
        ga.run_async(fails)
    with pytest.raises(asyncio.CancelledError):
        ga.run_async(cancelled)


def test_called_from_the_loop_itself_says_to_await() -> None:
    async def nested() -> None:
        ga.run_async(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="`await` the coroutine there instead"):
        ga.run_async(nested)


def test_asyncio_run_in_greenlets_fails_with_a_hint_to_use_the_bridge() -> None:
    results = ga.each(range(4), lambda _: asyncio.run(asyncio.sleep(0.2)), max_concurrent=4)
    failed = [r.error for r in results if not r.ok]
    assert failed, "the pitfall did not happen: asyncio.run in greenlets at once"
    for error in failed:
        assert isinstance(error, RuntimeError)
        assert "cannot be called from a running event loop" in str(error)
        assert str(error).endswith(HINT)


def test_unpatched_process_uses_threads() -> None:
    done = run_python("""
        import asyncio, time, warnings
        warnings.simplefilter("ignore")
        import greenagents as ga
        async def slow(n):
            await asyncio.sleep(1)
            return n
        started = time.monotonic()
        values = [r.value for r in ga.each(range(20), ga.async_to_sync(slow), max_concurrent=20)]
        assert values == list(range(20)), values
        assert time.monotonic() - started < 10  # one by one: 20 s
        print("ok", ga.run_async(slow, 7))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "7"]
