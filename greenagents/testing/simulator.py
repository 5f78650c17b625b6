"""Run the simulator: in a real OS thread of this process, or in a child process.

The thread form is for tests: it serves from its own thread with its own gevent hub, so a plain,
unpatched pytest run whose blocking client would otherwise starve it works — and so does a
monkey-patched one, because the thread is started with the *original* ``_thread`` functions (a
patched ``threading.Thread`` would be a greenlet of the caller's hub). The child-process form is
for benchmarks: thousands of connections without sharing a GIL with the client under test.

>>> import json, urllib.request
>>> with Simulator(seed=1) as sim:
...     body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
...     request = urllib.request.Request(sim.base_url + "/chat/completions", body.encode(),
...                                      {"Content-Type": "application/json"})
...     reply = json.load(urllib.request.urlopen(request))
...     sim.stats()["requests"]
1
>>> reply["choices"][0]["message"]["content"].endswith('You said: "hi".')
True
"""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import gevent
import gevent.event
from gevent import monkey

from greenagents.testing.options import API_KEY_ENV, SimOptions
from greenagents.testing.server import SimApp, make_server

#: Seconds a stopping server lets running requests finish before killing them (hangs, streams).
STOP_GRACE_S = 0.5
_LISTENING = re.compile(r"listening on (http://\S+?)/v1\s*$")

_allocate_lock = monkey.get_original("_thread", "allocate_lock")
_start_new_thread = monkey.get_original("_thread", "start_new_thread")


class _Endpoints:
    """URLs derived from the root ``url``, shared by the thread and the process handles."""

    url: str

    @property
    def base_url(self) -> str:
        """What OpenAI-style clients want: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        """What ``anthropic.Anthropic(base_url=...)`` wants: the root, without ``/v1``."""
        return self.url


@dataclass(repr=False)
class Simulator(SimOptions, _Endpoints):
    """A local OpenAI- and Anthropic-compatible LLM server with latency and fault injection.

    Knobs are those of :class:`~greenagents.testing.options.SimOptions`. ``start()`` serves from
    a background OS thread; ``start_process()`` serves from a child process instead.

    >>> sim = Simulator(latency=0.01, faults={"rate_limit": 0.1}, fault_attempts=1).start()
    >>> sim.base_url.startswith("http://127.0.0.1:")
    True
    >>> sim.stop()
    """

    _app: SimApp | None = field(default=None, init=False)
    _stop: Any = field(default=None, init=False)
    url: str = field(default="", init=False)

    def start(self) -> Simulator:
        """Start serving from a new OS thread; return once the port is bound."""
        if self._app is not None:
            raise RuntimeError("this Simulator is already running; stop() it first")
        app = SimApp(self)
        self.url, self._stop = serve_in_thread(app, self.host, self.port, what="simulator")
        self._app = app
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, free the port and end the thread."""
        if self._app is None:
            return
        self._stop()
        self._app = self._stop = None

    def stats(self) -> dict[str, Any]:
        """The same JSON as ``GET /_sim/stats``."""
        return self._running().snapshot()

    def reset(self) -> None:
        """Zero the stats and forget request attempts and rate-limit windows."""
        self._running().reset()

    def start_process(self) -> SimulatorProcess:
        """Serve these knobs from a child ``python -m greenagents.testing`` instead."""
        return SimulatorProcess(self)

    def _running(self) -> SimApp:
        if self._app is None:
            raise RuntimeError("the Simulator is not running; call start() or use `with`")
        return self._app

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url or "stopped"
        return f"<Simulator {state} latency={self.latency} faults={dict(self.faults)}>"


def serve_in_thread(app: Callable[..., Any], host: str, port: int, *,
                    what: str = "server") -> tuple[str, Callable[[], None]]:
    """Serve the WSGI ``app`` from a new OS thread with its own hub; return its root URL and a
    function that stops it (closing every connection, freeing the port, ending the thread).

    A server still serving when the program ends is stopped at exit (see :func:`_stop_at_exit`).
    """
    ready, done = _allocate_lock(), _allocate_lock()
    ready.acquire()
    done.acquire()
    outcome: dict[str, Any] = {}
    _start_new_thread(_serve_in_thread, (app, host, port, outcome, ready, done))
    ready.acquire()
    if "error" in outcome:
        raise OSError(f"{what} could not listen on {host}:{port}: "
                      f"{outcome['error']}") from outcome["error"]

    def stop() -> None:
        if stop not in _serving:  # stopped already (by its owner, or at exit)
            return
        _serving.remove(stop)
        outcome["stop"]()
        done.acquire()

    _serving.append(stop)
    return f"http://{host}:{outcome['port']}", stop


#: Stop functions of the servers still serving from a thread, for :func:`_stop_at_exit`.
_serving: list[Callable[[], None]] = []


@atexit.register
def _stop_at_exit() -> None:
    """Stop every server a program left serving, before the interpreter finalizes.

    Why: a server thread blocked in its hub (libev waiting with the GIL released) wakes when the
    finalizing interpreter closes the program's kept-alive connections to it. Once finalizing has
    begun, CPython ends a thread that asks for the GIL with ``pthread_exit``, whose forced stack
    unwinding runs into the switched greenlet stack and crashes the process (SIGSEGV), after the
    program's own work was done. ``atexit`` callbacks run while the interpreter is still whole.
    """
    for stop in reversed(_serving[:]):
        stop()


def _serve_in_thread(app: Callable[..., Any], host: str, port: int, outcome: dict[str, Any],
                     ready: Any, done: Any) -> None:
    """Body of the server thread: its own hub, a gevent server, and a thread-safe stop."""
    hub = gevent.get_hub()
    stopped = gevent.event.Event()
    server = make_server(app, host, port)
    try:
        server.start()
        outcome["port"] = server.server_port
        outcome["stop"] = lambda: hub.loop.run_callback_threadsafe(stopped.set)
    except Exception as exc:  # e.g. the port is taken: reported by start() in the caller
        outcome["error"] = exc
    ready.release()
    try:
        if "error" not in outcome:
            stopped.wait()
            server.stop(timeout=STOP_GRACE_S)
    finally:
        hub.destroy(destroy_loop=True)
        done.release()


class SimulatorProcess(_Endpoints):
    """A simulator in a child process; same URLs, ``stats()``, ``reset()`` and ``stop()``.

    The child gets its own interpreter and file-descriptor limit (raised to the hard limit),
    which is what a benchmark with 10,000 open connections needs.

    >>> with Simulator().start_process() as sim:
    ...     sim.stats()["requests"]
    0
    """

    def __init__(self, options: SimOptions) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        if options.api_key is not None:
            env[API_KEY_ENV] = options.api_key
        command = [sys.executable, "-m", "greenagents.testing", *options.to_args()]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
        self.url = self._await_url()

    def _await_url(self) -> str:
        """Read the child's stdout up to its "listening on" line (it prints nothing else)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = _LISTENING.search(line)
            if match:
                return match.group(1)
        self.stop()
        raise RuntimeError(f"simulator process exited ({self.process.returncode}) before "
                           "listening; see its stderr above")

    def stats(self) -> dict[str, Any]:
        """``GET /_sim/stats`` of the child."""
        return self._call("GET", "/_sim/stats")

    def reset(self) -> None:
        """``POST /_sim/reset`` on the child."""
        self._call("POST", "/_sim/reset")

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, method=method, data=b"" if
                                         method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
            return body

    def stop(self) -> None:
        """Terminate the child (kill it if it lingers) and close its pipe."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
