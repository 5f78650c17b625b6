"""A ready-made Celery app for workers, configured from the environment::

    celery -A greenagents.celery.worker worker -P gevent -c 200 --loglevel=warning

- ``GREENAGENTS_CELERY_URL``: the Redis of broker, results and shared limits
  (default ``redis://127.0.0.1:6379/0``).
- ``GREENAGENTS_CELERY_VISIBILITY_TIMEOUT``: seconds before an unacknowledged call is handed to
  another worker (default 3600; see :func:`~greenagents.celery.app_for`).
- ``GREENAGENTS_CELERY_TASKS``: targets (``module:Name``, comma-separated) to register as tasks
  of their own, for canvases that call them by name (see :func:`~greenagents.celery.register`);
  ``greenagents.call`` runs any target without this.
- ``GREENAGENTS_RATE_LIMITS``: budgets shared by every worker, as JSON — keys are a provider or
  ``provider/model``, values the arguments of :func:`greenagents.rate_limit`; the storage
  defaults to the same Redis, e.g. ``{"openai": {"rpm": 5000, "tpm": 2000000}}``.

- ``GREENAGENTS_PROMETHEUS_PORT``: serve Prometheus metrics on this port (turns
  ``prometheus=True`` on); ``GREENAGENTS_OTEL=1``: spans, under the caller's trace (set up the
  OpenTelemetry SDK in your own app module first, as ``tests/otel_worker.py`` does).

Your own app module works the same way: ``import greenagents.monkey`` first, then
``greenagents.celery.install(app)`` and ``ga.rate_limit(..., storage="redis://...")``.
"""

from __future__ import annotations

import greenagents.monkey  # first: patch before anything below imports ssl

# isort: split

import celery

import greenagents as ga
from greenagents.celery.task import app_for, load_target, register
from greenagents.config import worker_settings

__all__ = ["app", "rate_limits_from_env", "tasks_from_env"]

ENV = worker_settings()  # the variables above, read by pydantic-settings (greenagents.config)
URL = ENV.celery_url


def rate_limits_from_env(storage: str) -> list[ga.RateLimit]:
    """Apply the budgets of ``GREENAGENTS_RATE_LIMITS``, stored in ``storage`` unless they say.

    >>> import os
    >>> os.environ["GREENAGENTS_RATE_LIMITS"] = '{"openai/gpt-4o": {"rpm": 60}}'
    >>> rate_limits_from_env("memory://")
    [RateLimit('openai/gpt-4o', rpm=60, tpm=None, storage='memory://')]
    >>> del os.environ["GREENAGENTS_RATE_LIMITS"]
    """
    budgets = worker_settings().rate_limits
    try:
        applied = []
        for key, budget in budgets.items():
            provider, _, model = key.partition("/")
            applied.append(ga.rate_limit(provider, model=model or None,
                                         **{"storage": storage, **budget}))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ga.errors.ConfigError(
            f"GREENAGENTS_RATE_LIMITS={budgets!r}: {exc}; expected JSON such as "
            '{"openai": {"rpm": 500, "tpm": 200000}}') from None
    return applied


def tasks_from_env(app: celery.Celery) -> list[celery.Task]:
    """Register the targets of ``GREENAGENTS_CELERY_TASKS`` as tasks of their own on ``app``.

    >>> import os
    >>> os.environ["GREENAGENTS_CELERY_TASKS"] = "builtins:divmod"
    >>> [task.name for task in tasks_from_env(celery.Celery("mine"))]
    ['greenagents:builtins:divmod']
    >>> del os.environ["GREENAGENTS_CELERY_TASKS"]
    """
    registered = []
    for reference in worker_settings().tasks():
        try:
            registered.append(register(app, load_target(reference)))
        except (ImportError, AttributeError, ValueError) as exc:
            raise ga.errors.ConfigError(
                f"GREENAGENTS_CELERY_TASKS: cannot import {reference!r} ({type(exc).__name__}: "
                f"{exc}); give module:Name targets the worker can import") from None
    return registered


app = app_for(URL, visibility_timeout=ENV.celery_visibility_timeout)
rate_limits_from_env(URL)
tasks_from_env(app)
if ENV.prometheus_port:
    ga.configure(prometheus=True)
    from greenagents import prometheus

    prometheus.serve(ENV.prometheus_port)
