"""What greenagents logs, under which names, with which fields: one place, so names stay stable.

Everything goes through :mod:`logging` under ``greenagents.*`` loggers. Each record has an
``event`` attribute (a stable name, below) and its fields as attributes (``extra=``), so a JSON
formatter or a log shipper gets structure without parsing messages. INFO is quiet: nothing is
logged per call at INFO or above. Per-call records are DEBUG and come from a hooks listener,
installed by ``ga.configure(log_calls=True)`` (``GREENAGENTS_LOG_CALLS=1``), so a process that
does not ask for them pays nothing.

===========================  ==========================  =======  ================================
logger                       ``event``                   level    fields
===========================  ==========================  =======  ================================
``greenagents.calls``        ``call.ended``              DEBUG    target, index, ok, error_type,
                                                                  attempts, duration_s, model,
                                                                  input_tokens, output_tokens,
                                                                  cost_usd
``greenagents.attempts``     ``attempt.ended``           DEBUG    target, attempt, model, status,
                                                                  error_type, duration_s
``greenagents.waits``        ``wait.ended``              DEBUG    target, kind, scope, seconds
``greenagents.limits``       ``cooldown.started``        INFO     scope, seconds
``greenagents.hooks``        ``hook.failed``             WARNING  listener (once per listener)
``greenagents.celery``       ``celery.call_resent``      WARNING  index, task_id, grace_s
``greenagents.testing``      (the simulator's own log)
===========================  ==========================  =======  ================================

>>> calls.name, attempts.name, waits.name
('greenagents.calls', 'greenagents.attempts', 'greenagents.waits')
"""

from __future__ import annotations

import logging

from . import hooks

__all__ = ["listener"]

calls = logging.getLogger("greenagents.calls")
attempts = logging.getLogger("greenagents.attempts")
waits = logging.getLogger("greenagents.waits")


def _target(event: hooks.Event) -> str:
    return event.call.target if event.call is not None else ""


def listener(event: hooks.Event) -> None:
    """The hooks listener behind ``log_calls=True``: one DEBUG record per call, attempt, wait."""
    if isinstance(event, hooks.CallEnded) and calls.isEnabledFor(logging.DEBUG):
        r = event.result
        fields = {"event": "call.ended", "target": r.target, "index": r.index, "ok": r.ok,
                  "error_type": None if r.ok else type(r.error).__name__,
                  "attempts": r.attempts, "duration_s": round(r.duration_s, 6), "model": r.model,
                  "input_tokens": r.usage.prompt_tokens if r.usage else None,
                  "output_tokens": r.usage.completion_tokens if r.usage else None,
                  "cost_usd": r.cost_usd}
        calls.debug("call.ended: %s #%s %s after %d attempt(s) in %.3fs", r.target, r.index,
                    "ok" if r.ok else fields["error_type"], r.attempts, r.duration_s, extra=fields)
    elif isinstance(event, hooks.AttemptEnded) and attempts.isEnabledFor(logging.DEBUG):
        a = event.attempt
        attempts.debug("attempt.ended: %s attempt %d on %s: %s", _target(event), a.number, a.model,
                       a.error or "ok", extra={
                           "event": "attempt.ended", "target": _target(event), "attempt": a.number,
                           "model": a.model, "status": a.status, "error_type": a.error,
                           "duration_s": round(a.duration_s, 6)})
    elif isinstance(event, hooks.WaitEnded) and event.kind != "slot" \
            and waits.isEnabledFor(logging.DEBUG):
        waits.debug("wait.ended: %s waited %.3fs (%s %s)", _target(event), event.seconds,
                    event.kind, event.scope, extra={
                        "event": "wait.ended", "target": _target(event), "kind": event.kind,
                        "scope": event.scope, "seconds": round(event.seconds, 6)})


KINDS = (hooks.CallEnded, hooks.AttemptEnded, hooks.WaitEnded)
