"""Which run a call belongs to, and which input it came from: two context variables.

``ga.batch``/``each``/``stream`` give every run an id and set both variables in each call's own
context, so the execution log can say ``run_id`` and ``input_index`` for every call — also for an
agent called deep inside the user's function — and ``greenagents stats --run ID`` can show one run.
A batch started inside a call of another run joins that run. Outside any run, a call carries the
process's id (:data:`PROCESS_RUN_ID`) and no index.

>>> current_run_id() == PROCESS_RUN_ID, input_index.get()
(True, None)
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar

__all__ = ["PROCESS_RUN_ID", "current_run_id", "input_index", "new_run_id", "run_id"]


def new_run_id() -> str:
    """A fresh, short run id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


#: The run id of calls made outside any batch (one per process).
PROCESS_RUN_ID = new_run_id()

#: The run the current call belongs to (set by the runtime, or by ``greenagents run``).
run_id: ContextVar[str | None] = ContextVar("greenagents_run_id", default=None)

#: The 0-based position of the current call's input in its run (its line, for ``greenagents run``).
input_index: ContextVar[int | None] = ContextVar("greenagents_input_index", default=None)


def current_run_id() -> str:
    """The id of the run the caller is in, else the process's."""
    return run_id.get() or PROCESS_RUN_ID
