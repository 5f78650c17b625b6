"""A Redis and Celery workers on this machine, as subprocesses: for tests, benchmarks and trying out.

Production runs these as services; here they start in a second and always stop (context managers)::

    from greenagents.celery.local import Workers, redis_server

    with redis_server() as url, Workers(url, env={"OPENAI_BASE_URL": sim.base_url}) as workers:
        workers.start(2, concurrency=100)        # returns once both answer a ping
        results = ga_celery.batch(workers.app, calls)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

import celery

from greenagents.celery.task import app_for

__all__ = ["Workers", "redis_server"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port, without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):  # ready when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait()


class Workers:
    """``celery -A greenagents.celery.worker worker -P gevent`` subprocesses on the Redis at ``url``.

    ``env`` is added to each worker's environment (``OPENAI_BASE_URL``,
    ``GREENAGENTS_RATE_LIMITS``, ...); ``stderr`` is where their logs go (``subprocess.DEVNULL``
    to silence them; by default, ours); ``app`` is a client app for the same Redis, with the
    workers' ``visibility_timeout`` (see :func:`~greenagents.celery.app_for`). ``app_module`` is
    the workers' ``-A``: your own module that sets up, say, an OpenTelemetry exporter first.
    """

    def __init__(self, url: str, *, env: Mapping[str, str] | None = None, stderr: int | None = None,
                 visibility_timeout: float = 3600.0, app_module: str = "greenagents.celery.worker"):
        self.url, self.app_module = url, app_module
        self.env = {"GREENAGENTS_CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout), **(env or {})}
        self.stderr = stderr
        self.app: celery.Celery = app_for(url, visibility_timeout=visibility_timeout)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, count: int, *, concurrency: int = 100, **env: str) -> list[str]:
        """Start ``count`` workers (extra ``env`` for these); their names, once all answer."""
        names = [f"w{uuid.uuid4().hex[:8]}@127.0.0.1" for _ in range(count)]
        environ = {**os.environ, "GREENAGENTS_CELERY_URL": self.url, **self.env, **env}
        for name in names:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.app_module, "worker",
                 "-P", "gevent", "-c", str(concurrency), "-n", name, "--loglevel=warning",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                env=environ, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = self.app.control.ping(destination=names, timeout=0.5)
            if {name for reply in replies for name in reply} >= set(names):
                return names
            dead = [name for name in names if self.processes[name].poll() is not None]
            if dead:
                raise RuntimeError(f"worker(s) {dead} exited at start; see their stderr")
        raise RuntimeError(f"workers {names} did not answer a ping within 60 s")

    def kill(self, name: str) -> None:
        """SIGKILL one worker, as a crash would: no warm shutdown, nothing acknowledged."""
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def stop(self) -> None:
        """Kill every worker started here."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        self.processes.clear()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
