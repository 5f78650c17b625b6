"""Each call's Result in the result backend, under the call's own key, written a chunk at a time.

A call's key is ``"<batch_id>:<index>"`` (see :mod:`greenagents.celery.task`); its Result is
stored there as a Celery ``SUCCESS`` meta holding the :mod:`~greenagents.celery.wire` form, so
the dispatcher reads it with one ``MGET`` and a later run of the same batch finds it. On Redis the
writes of many calls go in one pipeline (one round trip, not one per call); on another backend,
one ``store_result`` each.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from celery import states

__all__ = ["ResultStore"]


class ResultStore:
    """Reads and writes calls' Results by key on a Celery result ``backend``.

    >>> import celery
    >>> store = ResultStore(celery.Celery(backend="cache+memory://").backend)
    >>> store.write([("b:0", {"value": 1})]); store.read(["b:0", "b:1"])
    [{'value': 1}, None]
    """

    def __init__(self, backend: Any):
        self.backend = backend
        client = getattr(backend, "client", None)  # redis-py's, on Celery's Redis backend
        self.pipelined = hasattr(client, "pipeline") and hasattr(backend, "mget")
        # What we store is plain JSON already: the json module itself reads and writes it for
        # Celery's json serializer, ~3× faster than going through kombu's registry and encoder.
        plain = getattr(backend, "serializer", None) == "json"
        self.encode: Callable[[Any], Any] = json.dumps if plain else backend.encode
        self.decode: Callable[[Any], Any] = json.loads if plain else backend.decode

    def result(self, value: Any) -> dict[str, Any] | None:
        """The Result (wire form) in a raw stored value, if it is one."""
        meta = self.decode(value)
        return meta["result"] if meta.get("status") == states.SUCCESS else None

    def read(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The stored Result (wire form) of each key, None where there is none yet."""
        if self.pipelined:
            raw = self.backend.mget([self.backend.get_key_for_task(key) for key in keys])
            return [None if value is None else self.result(value) for value in raw]
        metas = [self.backend.get_task_meta(key) for key in keys]
        return [meta["result"] if meta.get("status") == states.SUCCESS else None for meta in metas]

    def write(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Store each ``(key, Result in wire form)``: one round trip on Redis."""
        items = list(items)
        if not items:
            return
        if not self.pipelined:
            for key, data in items:
                self.backend.store_result(key, data, states.SUCCESS)
            return
        done = self.backend.app.now().isoformat()
        expires = self.backend.expires
        with self.backend.client.pipeline(transaction=False) as pipe:
            for key, data in items:
                meta = {"status": states.SUCCESS, "result": data, "traceback": None,
                        "children": [], "date_done": done, "task_id": key}
                value = self.encode(meta)
                name = self.backend.get_key_for_task(key)
                pipe.set(name, value, ex=expires or None)
            pipe.execute()
