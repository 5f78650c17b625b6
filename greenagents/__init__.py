"""greenagents: run thousands of LLM agent calls at once from plain synchronous Python.

After ``import greenagents.monkey`` (the first import of your program), blocking code — yours,
``requests``, the official SDKs, our agents — runs concurrently in gevent greenlets::

    import greenagents.monkey
    import greenagents as ga
    import requests

    def fetch(url: str) -> int:
        return requests.get(url, timeout=30).status_code

    results = ga.each(["http://127.0.0.1:8000/"] * 500, fetch, max_concurrent=200)

Attributes load lazily (PEP 562), so ``import greenagents`` imports neither ``ssl`` nor ``requests``
and ``import greenagents; greenagents.patch()`` is still an early enough patch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "patch": "patching",
    "is_patched": "patching",
    "available": "patching",
    "in_green_context": "patching",
    "Client": "client",
    "configure": "config",
    "settings": "config",
    "Settings": "config",
    "Result": "result",
    "Usage": "result",
    "Attempt": "result",
    "ToolCall": "result",
    "tool": "tools",
    "Tool": "tools",
    "ToolContext": "tools",
    "batch": "runtime",
    "each": "runtime",
    "stream": "runtime",
    "spawn": "runtime",
    "Agent": "agent",
    "Stream": "streaming",
    "TextDelta": "streaming",
    "Done": "streaming",
    "ToolStarted": "streaming",
    "ToolFinished": "streaming",
    "Retry": "retry",
    "RateLimit": "limits",
    "rate_limit": "limits",
    "budget": "budgets",
    "summary": "summaries",
    "CallsFailedWarning": "summaries",
    "Summary": "summaries",
    "submit_batch": "batchjobs",
    "Job": "batchjobs",
    "run_async": "asyncbridge",
    "async_to_sync": "asyncbridge",
    "doctor": "checkup",
    "Diagnosis": "checkup",
    "on_call_end": "hooks",
    "on_attempt": "hooks",
}
_SUBMODULES = ("celery", "dashboard", "errors", "hooks", "testing", "tracking")

__all__ = [
    "Agent",
    "Attempt",
    "CallsFailedWarning",
    "Client",
    "Diagnosis",
    "Done",
    "Job",
    "RateLimit",
    "Result",
    "Retry",
    "Settings",
    "Stream",
    "Summary",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolFinished",
    "ToolStarted",
    "Usage",
    "__version__",
    "async_to_sync",
    "available",
    "batch",
    "budget",
    "configure",
    "doctor",
    "each",
    "errors",
    "hooks",
    "in_green_context",
    "is_patched",
    "on_attempt",
    "on_call_end",
    "patch",
    "rate_limit",
    "run_async",
    "settings",
    "spawn",
    "stream",
    "submit_batch",
    "summary",
    "testing",
    "tool",
    "tracking",
]

if TYPE_CHECKING:
    from . import errors, hooks, testing, tracking
    from .agent import Agent
    from .asyncbridge import async_to_sync, run_async
    from .batchjobs import Job, submit_batch
    from .budgets import budget
    from .checkup import Diagnosis, doctor
    from .client import Client
    from .config import Settings, configure, settings
    from .hooks import on_attempt, on_call_end
    from .limits import RateLimit, rate_limit
    from .patching import available, in_green_context, is_patched, patch
    from .result import Attempt, Result, ToolCall, Usage
    from .retry import Retry
    from .runtime import batch, each, spawn, stream
    from .streaming import Done, Stream, TextDelta, ToolFinished, ToolStarted
    from .summaries import CallsFailedWarning, Summary, summary
    from .tools import Tool, ToolContext, tool


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"{__name__}.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        raise AttributeError(f"module 'greenagents' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
