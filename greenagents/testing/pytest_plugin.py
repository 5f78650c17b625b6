"""pytest fixtures for the simulator (registered through the ``pytest11`` entry point).

- ``sim``: a fresh :class:`~greenagents.testing.Simulator` per test, started and stopped around
  it. Configure it with the ``sim`` marker, whose keyword arguments are the simulator's knobs::

      @pytest.mark.sim(latency=0.2, faults={"rate_limit": 0.3}, fault_attempts=1)
      def test_retries(sim):
          client = openai.OpenAI(base_url=sim.base_url, api_key="test")
          ...
          assert sim.stats()["by_status"]["429"] > 0

- ``sim_factory``: ``sim_factory(**knobs)`` starts one more simulator (several per test if
  needed); every one is stopped at teardown.

A fresh server per test costs a few milliseconds and keeps tests independent: stats, attempt
counts and rate-limit windows never leak between tests. This module imports neither gevent nor
ssl; the simulator is imported inside the fixtures, after the user had a chance to patch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from greenagents.testing.simulator import Simulator


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sim(**knobs): configure the `sim` fixture (greenagents.testing.Simulator)")


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with any knobs; all of them stop when the test ends."""
    from greenagents.testing.simulator import Simulator

    started: list[Simulator] = []

    def factory(**knobs: Any) -> Simulator:
        started.append(Simulator(**knobs).start())
        return started[-1]

    yield factory
    for simulator in started:
        simulator.stop()


@pytest.fixture
def sim(request: pytest.FixtureRequest, sim_factory: Callable[..., Simulator]) -> Simulator:
    """A running simulator for this test, with the knobs of its ``@pytest.mark.sim(...)``."""
    marker = request.node.get_closest_marker("sim")
    return sim_factory(**(marker.kwargs if marker else {}))
