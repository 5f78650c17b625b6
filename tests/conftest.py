"""The test process runs monkey-patched, as a greenagents program would.

pyproject's ``addopts = -p greenagents.monkey`` patches before pytest loads plugins that import
``ssl`` (anyio's, langsmith's); the import below keeps ``pytest -p no:...`` runs patched too.
Unpatched behaviour (the thread fallback, the late-patch warning) is tested in subprocesses.
"""

import greenagents.monkey  # must stay the first import

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import greenagents as ga


@pytest.fixture(autouse=True)
def ga_client() -> Iterator[ga.Client]:
    """Each test starts from a fresh default client: its settings (the defaults and the
    environment), pools, rate limits, log writers, cache and budget, all new; reset after it."""
    client = ga.Client.default()
    client.reset()
    yield client
    client.reset()


def run_python(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (unpatched unless it patches), capturing output."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


assert ga.available(), "tests expect a patched process"

# A job started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT
# ignored, and so would every subprocess: the Ctrl-C tests would then wait forever. Handle it, so
# children start with the default disposition and Python's KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)


TRANSPORTS = ["urllib3", "geventhttpclient"]


@pytest.fixture(params=TRANSPORTS)
def http_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                   ga_client: ga.Client) -> str:
    """Run a test once per HTTP client (``settings().http_transport``), in this process and in
    the subprocesses it starts; geventhttpclient is the ``fast`` extra (CI installs it)."""
    name: str = request.param
    if name == "geventhttpclient":
        pytest.importorskip("geventhttpclient")
    monkeypatch.setenv("GREENAGENTS_HTTP_TRANSPORT", name)
    ga_client.reset()  # settings read again from the environment, pools closed
    return name


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server for one test (cache, budget and breaker stores)."""
    from greenagents.celery.local import redis_server

    with redis_server() as url:
        yield url
