"""A local HTTP service for tools to call, counting the tool requests in flight.

Tests and benchmarks of tool-using agents need a real tool doing real I/O, and a way to see that
one turn's tool calls — and thousands of agents' — really wait together. This server answers
every request after ``latency`` seconds and counts them: ``in_flight`` now and its ``peak``.

- ``GET /weather/<city>?unit=C``: a line of made-up weather (text);
- any other path: ``{"path": ..., "args": {query}, "body": ...}`` (JSON), an echo;
- ``?delay=<s>`` on any request replaces ``latency`` for it;
- ``GET /_tools/stats`` (``requests``, ``in_flight``, ``peak``), ``POST /_tools/reset``.

>>> import urllib.request
>>> with ToolServer(latency=0.01) as tools:
...     urllib.request.urlopen(tools.url + "/weather/Paris").read().decode()
...     tools.stats()["requests"]
'Paris: 21 °C, sunny'
1

From the command line (benchmarks run it in its own process):
``python -m greenagents.testing.toolserver --latency 0.5 [--port 0]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import gevent

__all__ = ["ToolServer", "ToolServerProcess"]

_WEATHER = {"C": "21 °C, sunny", "F": "70 °F, sunny"}


class ToolApp:
    """The WSGI app; counts are plain ints, safe because one hub serves every request."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.requests = self.in_flight = self.peak = 0

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "in_flight": self.in_flight, "peak": self.peak}

    def reset(self) -> None:
        self.requests = self.peak = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_tools/stats":
            return _reply(start_response, "application/json", json.dumps(self.stats()))
        if path == "/_tools/reset":
            self.reset()
            return _reply(start_response, "application/json", json.dumps(self.stats()))
        args = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        body = environ["wsgi.input"].read().decode("utf-8", "replace")
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            gevent.sleep(float(args.pop("delay", self.latency)))
        finally:
            self.in_flight -= 1
        if path.startswith("/weather/"):
            city = urllib.parse.unquote(path[len("/weather/"):])
            return _reply(start_response, "text/plain; charset=utf-8",
                          f"{city}: {_WEATHER.get(args.get('unit', 'C'), _WEATHER['C'])}")
        return _reply(start_response, "application/json",
                      json.dumps({"path": path, "args": args, "body": body}))


def _reply(start_response: Callable[..., Any], kind: str, text: str) -> list[bytes]:
    data = text.encode()
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(data)))])
    return [data]


class ToolServer:
    """The tool server in a thread of this process (``start``/``stop`` or ``with``).

    Like the simulator it serves from its own OS thread and hub, so a test's blocking client
    — patched or not — never starves it. ``start_process()`` serves from a child process.
    """

    def __init__(self, latency: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency, self.host, self.port = latency, host, port
        self.app = ToolApp(latency)
        self.url = ""
        self._stop: Callable[[], None] | None = None

    def start(self) -> ToolServer:
        from greenagents.testing.simulator import serve_in_thread

        self.url, self._stop = serve_in_thread(self.app, self.host, self.port, what="tool server")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def stats(self) -> dict[str, int]:
        """Requests served, in flight now, and the peak in flight since the last reset."""
        return self.app.stats()

    def reset(self) -> None:
        self.app.reset()

    def start_process(self) -> ToolServerProcess:
        return ToolServerProcess(self.latency, self.host, self.port)

    def __enter__(self) -> ToolServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ToolServerProcess:
    """The tool server in a child process: same ``url``, ``stats()``, ``reset()``, ``stop()``."""

    def __init__(self, latency: float, host: str, port: int) -> None:
        command = [sys.executable, "-m", "greenagents.testing.toolserver", "--latency",
                   str(latency), "--host", host, "--port", str(port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on " not in line:
            self.stop()
            raise RuntimeError("tool server process exited before listening; see its stderr")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def _call(self, method: str, path: str) -> dict[str, int]:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            stats: dict[str, int] = json.load(response)
            return stats

    def stats(self) -> dict[str, int]:
        return self._call("GET", "/_tools/stats")

    def reset(self) -> None:
        self._call("POST", "/_tools/reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ToolServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; print one ``listening on URL`` line once the port is bound."""
    from greenagents.testing.cli import raise_open_files_limit
    from greenagents.testing.server import make_server

    parser = argparse.ArgumentParser(prog="python -m greenagents.testing.toolserver")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    server = make_server(ToolApp(args.latency), args.host, args.port)
    server.start()
    print(f"tool server listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
