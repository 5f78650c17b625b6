"""Logging: stable event names and fields under ``greenagents.*``, quiet at INFO, useful at DEBUG."""

from __future__ import annotations

import logging

import pytest

import greenagents as ga
from greenagents import hooks
from greenagents.testing import Simulator
from tests.agents import SentimentAgent, at
from tests.conftest import run_python

FAST = ga.Retry(max=2, backoff="fixed", base=0.01, jitter=False)


@pytest.mark.sim(faults={"server_error": 1.0}, fault_attempts=1)
def test_debug_has_one_record_per_call_attempt_and_wait(sim: Simulator,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    ga.configure(log_calls=True)
    with caplog.at_level(logging.DEBUG, logger="greenagents"):
        results = ga.batch([(at(SentimentAgent, sim.base_url, retries=FAST), {"text": f"t{i}"})
                            for i in range(3)])
    assert all(r.ok for r in results)
    by_event: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        by_event.setdefault(getattr(record, "event", "?"), []).append(record)
    assert len(by_event["call.ended"]) == 3 and len(by_event["attempt.ended"]) == 6
    assert len(by_event["wait.ended"]) == 3
    call = by_event["call.ended"][0]
    assert call.name == "greenagents.calls" and call.levelno == logging.DEBUG
    assert call.ok and call.attempts == 2 and call.model == "openai/gpt-4o-mini"  # type: ignore[attr-defined]
    assert call.input_tokens > 0 and call.cost_usd > 0  # type: ignore[attr-defined]
    failed = [r for r in by_event["attempt.ended"] if r.error_type]  # type: ignore[attr-defined]
    assert len(failed) == 3 and {r.status for r in failed} == {500}  # type: ignore[attr-defined]
    assert {r.kind for r in by_event["wait.ended"]} == {"retry"}  # type: ignore[attr-defined]


@pytest.mark.sim(faults={"server_error": 1.0}, fault_attempts=1)
def test_info_is_quiet_per_call(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    ga.configure(log_calls=True)
    with caplog.at_level(logging.INFO, logger="greenagents"):
        ga.batch([(at(SentimentAgent, sim.base_url, retries=FAST), {"text": f"t{i}"})
                  for i in range(10)])
    assert [r for r in caplog.records if r.name.startswith("greenagents")] == []


def test_off_by_default_and_turned_off_again() -> None:
    assert not hooks.active
    ga.configure(log_calls=True)
    assert hooks.active
    ga.configure(log_calls=False)
    assert not hooks.active


def test_integrations_are_not_imported_unless_turned_on() -> None:
    done = run_python("""
        import sys
        import greenagents.monkey, greenagents as ga
        ga.each([1], abs)
        ga.configure(max_concurrency=5)
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "prometheus_client",
                                                              "greenagents.instrument"))))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_integration_without_its_extra_is_a_config_error_naming_it() -> None:
    done = run_python("""
        import sys
        sys.modules["prometheus_client"] = None  # as if the extra were not installed
        import greenagents.monkey, greenagents as ga
        try:
            ga.configure(prometheus=True)
        except ga.errors.ConfigError as exc:
            print(exc)
        print(ga.settings().prometheus)
    """)
    assert done.returncode == 0, done.stderr
    message, still_off = done.stdout.strip().splitlines()
    assert "pip install 'greenagents[prometheus]'" in message and still_off == "False"
