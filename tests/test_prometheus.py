"""Prometheus metrics, scraped for real: in process while a batch runs, from a gunicorn with two
workers in multiprocess mode (with OTLP export on), and from a Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests

pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed: "
                                                "pip install -e '.[prometheus]'")

from prometheus_client.parser import text_string_to_metric_families

import greenagents as ga
from greenagents.celery.local import _free_port
from greenagents.testing import Simulator
from tests.agents import SentimentAgent, at
from tests.otlp import receiver
from tests.test_celery import redis_url

assert redis_url  # a fixture of the Celery tests: one redis-server for the session

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "observability"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url`` as {(name, sorted labels): value}."""
    text = requests.get(url, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, want) in ls for k, want in labels.items()))


@pytest.fixture(scope="module")
def endpoint() -> str:
    from greenagents import prometheus

    port = _free_port()
    prometheus.serve(port, addr="127.0.0.1")
    return f"http://127.0.0.1:{port}/metrics"


@pytest.mark.sim(latency=1.0)
def test_gauges_scraped_while_a_batch_runs(sim: Simulator, endpoint: str) -> None:
    ga.configure(prometheus=True)
    agent = at(SentimentAgent, sim.base_url)
    running = ga.spawn(ga.batch, [(agent, {"text": f"t{i}"}) for i in range(30)],
                       max_concurrent=10)
    deadline = time.monotonic() + 10
    while total(during := scrape(endpoint), "greenagents_calls_in_flight") < 10:
        assert time.monotonic() < deadline and not running.ready()
        gevent.sleep(0.05)
    assert total(during, "greenagents_calls_in_flight") == 10
    assert total(during, "greenagents_slots_waiting") == 10  # started ahead, parked on the bound
    assert all(r.ok for r in running.get())
    after = scrape(endpoint)
    assert total(after, "greenagents_calls_in_flight") == total(after, "greenagents_slots_waiting") == 0


def test_budget_left_and_cache_hits_are_scraped(sim: Simulator, endpoint: str,
                                                tmp_path: Path) -> None:
    ga.configure(prometheus=True, cache=f"sqlite:///{tmp_path / 'cache.db'}")
    agent = at(SentimentAgent, sim.base_url, cache=True)
    with ga.budget("tenant-metrics", max_cost_usd=1.0) as spend:
        first = ga.batch([(agent, {"text": f"t{i}"}) for i in range(5)], max_concurrent=5)
        again = ga.batch([(agent, {"text": f"t{i}"}) for i in range(5)], max_concurrent=5)
    samples = scrape(endpoint)
    assert all(r.ok for r in first) and all(r.cached for r in again)
    assert total(samples, "greenagents_budget_remaining_usd", budget="tenant-metrics") == \
        pytest.approx(1.0 - spend.spent_usd) and spend.spent_usd > 0
    assert total(samples, "greenagents_cache_hits_total",
                 target="tests.agents.SentimentAgent") >= 5


@pytest.mark.sim(faults={"rate_limit": 1.0}, fault_attempts=1, retry_after=0.01)
def test_counters_of_a_batch_with_429s(sim: Simulator, endpoint: str) -> None:
    ga.configure(prometheus=True)
    agent = at(SentimentAgent, sim.base_url, retries=ga.Retry(max=2, base=0.01, jitter=False))
    before = scrape(endpoint)
    results = ga.batch([(agent, {"text": f"t{i}"}) for i in range(30)], max_concurrent=10)
    after = scrape(endpoint)
    assert all(r.ok for r in results)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    target = "tests.agents.SentimentAgent"
    assert grew("greenagents_calls_total", target=target, outcome="ok") == 30
    assert grew("greenagents_call_duration_seconds_count", target=target) == 30
    model = "openai/gpt-4o-mini"
    assert grew("greenagents_attempts_total", model=model, outcome="ok") == 30
    assert grew("greenagents_attempts_total", model=model, error_type="RateLimited") == 30
    assert grew("greenagents_rate_limited_total", model=model) == 30
    assert grew("greenagents_retries_total", target=target) == 30
    assert grew("greenagents_wait_seconds_total", kind="retry") > 0
    assert grew("greenagents_tokens_total", model=model, direction="input") == sum(
        r.usage.prompt_tokens for r in results if r.usage)
    assert grew("greenagents_cost_usd_total", model=model) == pytest.approx(
        sum(r.cost_usd or 0 for r in results))


def test_failures_are_counted_by_error_type(endpoint: str) -> None:
    ga.configure(prometheus=True)
    before = scrape(endpoint)
    ga.each(["1", "x", "y"], int)
    after = scrape(endpoint)
    assert total(after, "greenagents_calls_total", target="int", error_type="ValueError") - total(
        before, "greenagents_calls_total", target="int", error_type="ValueError") == 2


@pytest.fixture
def observed_gunicorn(tmp_path: Path) -> Iterator[tuple[str, Any, Path]]:
    """The example: gunicorn, two gevent workers, multiprocess metrics, OTLP to a local receiver."""
    sim = Simulator(latency=0.2).start_process()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = _free_port()
    with receiver() as otlp, sim:
        env = {**os.environ, "OPENAI_BASE_URL": sim.base_url, "BIND": f"127.0.0.1:{port}",
               "WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
               "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        err = (tmp_path / "gunicorn.err").open("w")
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c",
                                   str(EXAMPLE / "gunicorn.conf.py")], env=env, stdout=err,
                                  stderr=err)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(f"{url}/metrics", timeout=2)
                    break
                except requests.RequestException:  # not listening yet, or a worker still booting
                    assert server.poll() is None and time.monotonic() < deadline, \
                        (tmp_path / "gunicorn.err").read_text()
                    gevent.sleep(0.2)
            yield url, otlp, metrics_dir
        finally:
            server.send_signal(signal.SIGTERM)  # graceful: workers flush their spans
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_gunicorn_two_workers_multiprocess_metrics_and_traces(
        observed_gunicorn: tuple[str, Any, Path]) -> None:
    url, otlp, metrics_dir = observed_gunicorn
    replies = ga.each(range(20), lambda i: requests.get(f"{url}/review", params={"text": f"t{i}"},
                                                        timeout=30).json())
    assert all(r.ok and r.value["ok"] for r in replies), replies[:2]
    samples = scrape(f"{url}/metrics")
    assert total(samples, "greenagents_calls_total", outcome="ok") == 60  # whichever worker serves
    assert total(samples, "greenagents_attempts_total", model="openai/gpt-4o-mini") == 60
    assert total(samples, "greenagents_calls_in_flight") == 0
    assert any(metrics_dir.iterdir()), "multiprocess mode writes one file set per worker"
    deadline = time.monotonic() + 10
    while len([s for s in otlp.spans if s["name"] == "GET /review"]) < 20:
        assert time.monotonic() < deadline, f"{len(otlp.spans)} spans received"
        gevent.sleep(0.2)
    requests_ = {s["span_id"]: s for s in otlp.spans if s["name"] == "GET /review"}
    calls = [s for s in otlp.spans if s["name"].startswith("invoke_agent")]
    assert len(calls) == 60 and {s["parent_id"] for s in calls} == set(requests_)


def test_a_celery_worker_serves_its_metrics(redis_url: str) -> None:
    import redis

    import greenagents.celery as ga_celery
    from greenagents.celery.local import Workers

    redis.Redis.from_url(redis_url).flushdb()
    port = _free_port()
    with Simulator().start_process() as sim, \
            Workers(redis_url, env={"PYTHONPATH": str(ROOT)}) as workers:
        workers.start(1, OPENAI_BASE_URL=sim.base_url, GREENAGENTS_PROMETHEUS_PORT=str(port))
        results = ga_celery.batch(workers.app, [(SentimentAgent, {"text": f"t{i}"})
                                                for i in range(5)])
        assert all(r.ok for r in results)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert total(samples, "greenagents_calls_total", target="tests.agents.SentimentAgent",
                 outcome="ok") == 5
    assert total(samples, "greenagents_tokens_total", direction="output") > 0
