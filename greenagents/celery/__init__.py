"""Scale out on Celery: greenagents inside each worker, Redis as broker, result store and limits.

Install with ``pip install "greenagents[celery]"``. Workers run the gevent pool, so each one makes
hundreds of calls at once; a batch is spread over every worker listening on the same Redis, on
one machine or many. Start workers from the ready-made app (or from your own, see
:func:`install`)::

    GREENAGENTS_CELERY_URL=redis://10.0.0.5:6379/0 \\
    GREENAGENTS_RATE_LIMITS='{"openai": {"rpm": 5000, "tpm": 2000000}}' \\
        celery -A greenagents.celery.worker worker -P gevent -c 200

and dispatch from plain synchronous code::

    import greenagents.monkey
    import greenagents.celery as ga_celery
    from myproject.agents import SentimentAgent      # importable by the workers too

    app = ga_celery.app_for("redis://10.0.0.5:6379/0")
    results = ga_celery.batch(app, [(SentimentAgent, {"text": t}) for t in texts])
    for result in ga_celery.stream(app, calls):      # as they complete
        ...

An agent can also be a task of its own in your canvases: ``register(app, SentimentAgent)``.

Every input yields exactly one :class:`~greenagents.Result`, as a local ``ga.batch`` would give
it, even when a worker is killed mid-batch: see :mod:`greenagents.celery.task` for how (late
acknowledgement, redelivery, an idempotency key per call) and :mod:`greenagents.celery.dispatch`
for the loss Redis cannot see by itself.
"""

from __future__ import annotations

from greenagents.celery.dispatch import batch, stream
from greenagents.celery.task import CHUNK_TASK_NAME, TASK_NAME, app_for, install, reference, register
from greenagents.celery.wire import from_json, to_json

__all__ = ["CHUNK_TASK_NAME", "TASK_NAME", "app_for", "batch", "from_json", "install", "reference",
           "register", "stream", "to_json"]
