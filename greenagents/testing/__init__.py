"""Test tooling: a local OpenAI- and Anthropic-compatible LLM simulator and its pytest fixtures.

>>> from greenagents.testing import Simulator
>>> with Simulator(latency=0.01) as sim:
...     sim.base_url.startswith("http://127.0.0.1:")
True

Importing this package is cheap: :class:`Simulator` (and with it gevent) loads on first use, so
``import greenagents.testing`` never imports ``ssl`` before the user had a chance to patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greenagents.testing.faults import FAULTS
    from greenagents.testing.simulator import Simulator, SimulatorProcess

__all__ = ["FAULTS", "Simulator", "SimulatorProcess"]

_HOMES = {"Simulator": "simulator", "SimulatorProcess": "simulator", "FAULTS": "faults"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
