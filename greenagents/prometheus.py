"""Prometheus metrics a team alerts on: calls by outcome, attempts, 429s, waits, tokens, cost, in flight.

Turned on by ``ga.configure(prometheus=True)`` (or ``GREENAGENTS_PROMETHEUS=1``); needs the
``prometheus`` extra (``pip install 'greenagents[prometheus]'``). The metrics live in
``prometheus_client``'s default registry, so an app that already serves ``/metrics`` shows them
with no change; otherwise :func:`wsgi_app` is a ``/metrics`` endpoint to mount and :func:`serve`
starts one on a port of its own (a Celery worker: ``GREENAGENTS_PROMETHEUS_PORT``).

Several processes (gunicorn workers): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
*before* the workers start (the gunicorn config does it), call
``prometheus_client.multiprocess.mark_process_dead(pid)`` in gunicorn's ``child_exit``, and serve
:func:`wsgi_app`: it adds up every worker's files (see ``examples/observability``).

==========================================  =========  ===========================================
metric                                      type       labels
==========================================  =========  ===========================================
``greenagents_calls_total``                 counter    target, outcome (ok/error), error_type
``greenagents_call_duration_seconds``       histogram  target, outcome
``greenagents_attempts_total``              counter    model, outcome, error_type
``greenagents_rate_limited_total``          counter    model (429 answers)
``greenagents_retries_total``               counter    target (backoffs slept)
``greenagents_wait_seconds_total``          counter    kind (retry, cooldown, rate_limit, slot)
``greenagents_cooldowns_total``             counter    scope (provider@base_url)
``greenagents_tokens_total``                counter    model, direction (input/output)
``greenagents_cost_usd_total``              counter    model
``greenagents_calls_in_flight``             gauge      (live sum over processes)
``greenagents_slots_waiting``               gauge      calls waiting for a concurrency slot
==========================================  =========  ===========================================
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    multiprocess,
    start_http_server,
)

from . import hooks, pricing
from .errors import RateLimited

__all__ = ["KINDS", "listener", "registry", "serve", "wsgi_app"]

CALLS = Counter("greenagents_calls", "Calls ended, by outcome and error type.",
                ["target", "outcome", "error_type"])
DURATION = Histogram("greenagents_call_duration_seconds", "Seconds per call, retries included.",
                     ["target", "outcome"],
                     buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300))
ATTEMPTS = Counter("greenagents_attempts", "Requests to models (retries and fallbacks included).",
                   ["model", "outcome", "error_type"])
RATE_LIMITED = Counter("greenagents_rate_limited", "429 answers from providers.", ["model"])
RETRIES = Counter("greenagents_retries", "Retry backoffs slept.", ["target"])
WAITS = Counter("greenagents_wait_seconds", "Seconds calls waited, by kind.", ["kind"])
COOLDOWNS = Counter("greenagents_cooldowns", "Cooldowns started after a provider's 429s.",
                    ["scope"])
TOKENS = Counter("greenagents_tokens", "Tokens sent and received.", ["model", "direction"])
COST = Counter("greenagents_cost_usd", "Spend in USD (known prices only).", ["model"])
IN_FLIGHT = Gauge("greenagents_calls_in_flight", "Calls running now.", multiprocess_mode="livesum")
SLOTS_WAITING = Gauge("greenagents_slots_waiting", "Calls waiting for a concurrency slot.",
                      multiprocess_mode="livesum")
BUDGET_LEFT = Gauge("greenagents_budget_remaining_usd", "USD a budget has left (ga.budget, "
                    "max_cost_usd), as of its last charge.", ["budget"],
                    multiprocess_mode="mostrecent")
CACHED = Counter("greenagents_cache_hits", "Calls answered from the response cache.", ["target"])

KINDS = (hooks.CallStarted, hooks.CallEnded, hooks.AttemptEnded, hooks.WaitStarted,
         hooks.WaitEnded, hooks.CooldownStarted, hooks.BudgetSpent)


def listener(event: hooks.Event) -> None:
    """The hooks listener behind ``prometheus=True``."""
    if isinstance(event, hooks.CallStarted) and event.call is not None:
        IN_FLIGHT.inc()
        event.call.data["prometheus"] = True
    elif isinstance(event, hooks.CallEnded):
        if event.call is not None and event.call.data.pop("prometheus", False):
            IN_FLIGHT.dec()
        r = event.result
        outcome = "ok" if r.ok else "error"
        CALLS.labels(r.target, outcome, "" if r.ok else type(r.error).__name__).inc()
        if r.cached:
            CACHED.labels(r.target).inc()
        DURATION.labels(r.target, outcome).observe(r.duration_s)
    elif isinstance(event, hooks.AttemptEnded):
        _on_attempt(event)
    elif isinstance(event, hooks.WaitStarted) and event.kind == "slot":
        SLOTS_WAITING.inc()
    elif isinstance(event, hooks.WaitEnded):
        if event.kind == "slot":
            SLOTS_WAITING.dec()
        elif event.kind == "retry":
            RETRIES.labels(event.call.target if event.call is not None else "").inc()
        WAITS.labels(event.kind).inc(event.seconds)
    elif isinstance(event, hooks.CooldownStarted):
        COOLDOWNS.labels(event.scope).inc()
    elif isinstance(event, hooks.BudgetSpent):
        BUDGET_LEFT.labels(event.name).set(max(0.0, event.max_cost_usd - event.spent_usd))


def _on_attempt(event: hooks.AttemptEnded) -> None:
    model = event.attempt.model or ""
    error = event.attempt.error or ""
    ATTEMPTS.labels(model, "error" if error else "ok", error).inc()
    if event.attempt.status == 429 or isinstance(event.error, RateLimited):
        RATE_LIMITED.labels(model).inc()
    if event.usage is not None:
        TOKENS.labels(model, "input").inc(event.usage.prompt_tokens)
        TOKENS.labels(model, "output").inc(event.usage.completion_tokens)
        cost = pricing.cost_usd(model, event.usage)
        if cost:
            COST.labels(model).inc(cost)


def registry() -> Any:
    """What to expose: every process's metrics in multiprocess mode, else the default registry."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


def wsgi_app() -> Any:
    """A WSGI app serving the metrics (all workers' in multiprocess mode); mount it at /metrics.

    >>> callable(wsgi_app())
    True
    """
    return make_wsgi_app(registry())


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve the metrics on ``http://addr:port/metrics`` from a thread (a greenlet once patched)."""
    start_http_server(port, addr=addr, registry=registry())
