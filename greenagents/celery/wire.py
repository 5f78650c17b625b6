"""The JSON form of a :class:`~greenagents.Result`, so it survives Celery's serializer unchanged.

A worker returns :func:`to_json` of its Result; the caller turns it back with :func:`from_json`.
Every field travels: index, target, value, error, attempts, duration, usage, cost, model and the
per-attempt history. Two things need care:

* **values**: they travel as JSON (pydantic models dumped, tuples as lists). Given the agent's
  ``output`` type, :func:`from_json` validates the value back into it, so an agent whose output is
  a pydantic model gives back that model, not a dict.
* **errors**: an exception cannot be pickled safely across machines, so it travels as its
  message and the names of its classes. It comes back as the nearest class of its lineage that
  greenagents can rebuild — a ``greenagents.errors`` class (with ``status``, ``provider`` and
  ``retry_after``) or a builtin one — so ``except ga.errors.RateLimited`` and
  ``except ValueError`` still work. A class that had to be replaced by an ancestor is named in the
  message.

>>> from greenagents.errors import RateLimited
>>> sent = Result(index=3, target="m.F", error=RateLimited("slow down", retry_after=2.0))
>>> back = from_json(to_json(sent))
>>> type(back.error).__name__, str(back.error), back.error.retry_after, back.index
('RateLimited', 'slow down', 2.0, 3)
"""

from __future__ import annotations

import builtins
import json
import sys
from typing import Any

from pydantic import TypeAdapter

from greenagents import errors, jsonl
from greenagents.agent import Agent
from greenagents.result import Attempt, Result, ToolCall, Usage

__all__ = ["from_json", "plain", "to_json"]

_orjson: Any
try:  # the fast extra: the same JSON as jsonl.dumps, ~10× faster on a Result
    import orjson as _orjson
except ImportError:  # pragma: no cover - the suite installs it
    _orjson = None

# What a ProviderError carries besides its message.
_PROVIDER_FIELDS = ("status", "provider", "retry_after")


def _rebuildable(kind: type) -> bool:
    if kind.__module__ == errors.__name__:
        return getattr(errors, kind.__name__, None) is kind
    return kind.__module__ == "builtins" and getattr(builtins, kind.__name__, None) is kind


def _error_to_json(error: BaseException) -> dict[str, Any]:
    kind = type(error)
    return {"raised": f"{kind.__module__}.{kind.__qualname__}", "message": str(error),
            "lineage": [c.__name__ for c in kind.__mro__ if _rebuildable(c)],
            **{name: getattr(error, name) for name in _PROVIDER_FIELDS if hasattr(error, name)}}


def _error_from_json(data: dict[str, Any]) -> BaseException:
    """The first class of the error's lineage that can be built from a message alone."""
    for name in data["lineage"]:
        kind: type[BaseException] = getattr(errors, name, None) or getattr(builtins, name)
        message = data["message"]
        if f"{kind.__module__}.{kind.__qualname__}" != data["raised"]:
            message = f"{data['raised']}: {message}"
        try:
            if issubclass(kind, errors.ProviderError):
                extra = {n: data[n] for n in _PROVIDER_FIELDS if n in data}
                if not issubclass(kind, errors.RateLimited):
                    extra.pop("retry_after", None)
                return kind(message, **extra)
            return kind(message)
        except TypeError:  # e.g. UnicodeDecodeError wants five arguments: try its parent
            continue
    raise AssertionError("unreachable: BaseException is in every lineage")


def plain(value: Any) -> Any:
    """``value`` in plain JSON types: what reading back :func:`greenagents.jsonl.dumps` of it
    gives (pydantic models dumped, tuples and sets as lists, NaN as None, ...).

    >>> plain({"at": (1, 2), "score": float("nan"), "tags": {"a"}})
    {'at': [1, 2], 'score': None, 'tags': ['a']}
    """
    if _orjson is not None:
        try:
            return _orjson.loads(_orjson.dumps(value, default=jsonl.jsonable))
        except TypeError:  # what orjson refuses (big ints, lone surrogates, non-str keys)
            pass
    return json.loads(jsonl.dumps(value))


def to_json(result: Result[Any]) -> dict[str, Any]:
    """``result`` as plain JSON types (what a Celery task returns).

    >>> to_json(Result(index=0, target="len", value=(1, 2)))["value"]
    [1, 2]
    """
    return {
        "index": result.index,
        "target": result.target,
        "value": plain(result.value),
        "error": None if result.error is None else _error_to_json(result.error),
        "attempts": result.attempts,
        "duration_s": result.duration_s,
        "usage": None if result.usage is None else dict(vars(result.usage)),
        "cost_usd": result.cost_usd,
        "model": result.model,
        # vars(), not dataclasses.asdict(): the entries are flat, and asdict's deep copy cost
        # ~140 µs per Result on a Celery worker (pyinstrument, 1,000 agent calls)
        "history": [dict(vars(attempt)) for attempt in result.history],
    }


_outputs: dict[str, TypeAdapter[Any]] = {}  # target -> its agent's output, once found


def _known_output(target: str) -> TypeAdapter[Any] | None:
    """The output type of the agent ``target`` names (``module.Class``), if this process has
    imported that module (nothing is imported here); None for text or the unknown."""
    if target in _outputs:
        return _outputs[target]
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        found: Any = module
        for name in parts[cut:]:
            found = getattr(found, name, None)
        if isinstance(found, type) and issubclass(found, Agent) and found.output is not str:
            _outputs[target] = TypeAdapter(found.output)
            return _outputs[target]
        return None
    return None


def from_json(data: dict[str, Any], output: TypeAdapter[Any] | None = None) -> Result[Any]:
    """The :class:`Result` that :func:`to_json` described; ``output`` validates the value back.

    Without ``output``, the value of an agent whose class this process has imported is validated
    into that agent's ``output`` type (its pydantic model, not a dict).

    >>> from pydantic import BaseModel
    >>> class Mood(BaseModel):
    ...     label: str
    >>> from_json(to_json(Result(value=Mood(label="ok"))), TypeAdapter(Mood)).value
    Mood(label='ok')
    """
    error = None if data["error"] is None else _error_from_json(data["error"])
    value = data["value"]
    if output is None and error is None and data["target"]:
        output = _known_output(data["target"])
    if output is not None and error is None:
        value = output.validate_python(value)
    return Result(
        index=data["index"], target=data["target"], value=value, error=error,
        attempts=data["attempts"], duration_s=data["duration_s"],
        usage=None if data["usage"] is None else Usage(**data["usage"]),
        cost_usd=data["cost_usd"], model=data["model"],
        history=tuple(ToolCall(**entry) if "tool" in entry else Attempt(**entry)
                      for entry in data["history"]))
