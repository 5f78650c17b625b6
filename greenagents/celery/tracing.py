"""The caller's trace context, carried to Celery workers in each message's headers.

With ``otel=True`` on both sides (``ga.configure(otel=True)`` in the dispatcher,
``GREENAGENTS_OTEL=1`` for the workers), every greenagents task message carries the W3C
``traceparent`` of the span current when it was sent, and the worker makes it the parent of the
call's spans: one trace shows a dispatcher and the calls its workers ran. Only greenagents'
tasks (``greenagents.call`` and those of :func:`~greenagents.celery.register`) are touched; with
tracing off the handlers return at once.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from greenagents.config import settings

__all__: list[str] = []

_TOKEN = "greenagents_otel_token"


def _ours(name: object) -> bool:
    return isinstance(name, str) and name.startswith("greenagents")


def _inject(sender: object = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None and _ours(sender) and settings().otel:
        from greenagents import otel

        otel.inject(headers)


def _attach(task: Any = None, **_: Any) -> None:
    if task is not None and _ours(task.name) and settings().otel:
        from greenagents import otel

        setattr(task.request, _TOKEN, otel.extract(task.request))


def _detach(task: Any = None, **_: Any) -> None:
    token = getattr(getattr(task, "request", None), _TOKEN, None)
    if token is not None:
        from opentelemetry import context

        context.detach(token)


signals.before_task_publish.connect(_inject, weak=False)
signals.task_prerun.connect(_attach, weak=False)
signals.task_postrun.connect(_detach, weak=False)
