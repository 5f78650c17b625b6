"""Test tooling: a local OpenAI- and Anthropic-compatible LLM simulator and its pytest fixtures.

>>> from greenagents.testing import Simulator
>>> with Simulator(latency=0.01) as sim:
...     sim.base_url.startswith("http://127.0.0.1:")
True

Quick reference:

- Endpoints: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic),
  ``GET /v1/models``, ``GET /_sim/stats``, ``POST /_sim/reset``; the Batch APIs: OpenAI
  ``/v1/files`` and ``/v1/batches``, Anthropic ``/v1/messages/batches`` (knobs ``batch_*``, see
  :mod:`greenagents.testing.batches`).
- Clients: ``openai.OpenAI(base_url=sim.base_url, ...)``,
  ``anthropic.Anthropic(base_url=sim.anthropic_url, ...)``.
- Faults (``Simulator(faults={name: rate})``, see :data:`FAULTS`): ``rate_limit`` (429 with
  ``Retry-After`` and ``retry-after-ms``), ``server_error`` (500), ``overloaded`` (OpenAI 503,
  Anthropic 529), ``reset`` (connection reset, no answer), ``hang`` (no answer until the client
  hangs up), ``malformed`` (200, invalid JSON), ``truncated`` (200, body cut short),
  ``schema_invalid`` (200, JSON that breaks the requested schema or tool arguments),
  ``tool_unknown`` (the first tool call names a tool not offered), ``tool_loop`` (tools are
  called again even after their results, so an agent loop never ends). ``fault_attempts=K`` limits
  faults to the first K tries of each request (model and conversation), so retrying clients get through.
- Steering headers for one request: ``X-Sim-Latency: <s>``, ``X-Sim-Fault: <name>``,
  ``X-Sim-Retry-After: <s>``.
- ``ToolServer(latency=0.5)``: a local HTTP service for tools to call, counting the requests in
  flight (``stats()["peak"]``); see :mod:`greenagents.testing.toolserver`.
- pytest: the ``sim`` fixture (configure with ``@pytest.mark.sim(**knobs)``) and
  ``sim_factory(**knobs)``; see :mod:`greenagents.testing.pytest_plugin`.
- CLI: ``greenagents sim --latency 0.5 --fault rate_limit=0.3 --fault-attempts 1`` or
  ``python -m greenagents.testing ...``; ``Simulator(...).start_process()`` runs it for you.

Importing this package is cheap: :class:`Simulator` (and with it gevent) loads on first use, so
``import greenagents.testing`` never imports ``ssl`` before the user had a chance to patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greenagents.testing.faults import FAULTS
    from greenagents.testing.simulator import Simulator, SimulatorProcess
    from greenagents.testing.toolserver import ToolServer

__all__ = ["FAULTS", "Simulator", "SimulatorProcess", "ToolServer"]

_HOMES = {"Simulator": "simulator", "SimulatorProcess": "simulator", "FAULTS": "faults",
          "ToolServer": "toolserver"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
