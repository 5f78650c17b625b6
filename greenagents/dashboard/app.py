"""The dashboard's WSGI application and :func:`serve`, on gevent's WSGI server.

Plain WSGI routing over a handful of URLs; pages are Jinja2 templates with autoescaping on, so
no text from the log (inputs, outputs, error messages, model names) is ever rendered as markup,
and a Content-Security-Policy forbids inline scripts besides. A running run's page re-fetches
its own content every two seconds (``?partial=1``) until the run stops.

Bound to anything but loopback, every request must carry the token: ``?token=`` once (it is then
kept in a same-site cookie), a cookie, or ``Authorization: Bearer``.
"""

from __future__ import annotations

import csv
import hmac
import io
import ipaddress
import json
import mimetypes
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import jinja2

from ..config import DashboardSettings, from_environment
from ..errors import ConfigError
from . import charts
from .runs import Runs, RunStats
from .store import CallFilter, Store

__all__ = ["TOKEN_ENV", "Dashboard", "serve"]

TOKEN_ENV = "GREENAGENTS_DASHBOARD_TOKEN"
_COOKIE = "greenagents_token"
_RUNS_SHOWN = 200  # the overview's most recent runs (many small batches make many runs)
_SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"),
    ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store")]
_STATUS = {200: "200 OK", 303: "303 See Other", 400: "400 Bad Request", 403: "403 Forbidden",
           404: "404 Not Found", 405: "405 Method Not Allowed"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Response(Exception):
    """Raised to answer early (an error page, a redirect)."""

    def __init__(self, status: int, text: str = "", headers: list[tuple[str, str]] | None = None):
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or []


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _money(value: float | None) -> str:
    """Dollars: cents above $1, micro-dollars below (one call often costs $0.00001)."""
    if value is None:
        return "–"
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {seconds:02d}s"


def _when(value: float | None) -> str:
    return "–" if not value else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _pretty(text: str | None) -> str:
    """Indented JSON for a payload column; the text as-is if it is not JSON."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def command_target(agent: str) -> str:
    """``pkg.module.Name`` (a Result's target) as ``greenagents run``'s ``pkg.module:Name``.

    >>> command_target("greenagents.demo.SentimentAgent")
    'greenagents.demo:SentimentAgent'
    """
    module, _, name = agent.rpartition(".")
    return f"{module}:{name}" if module else agent


class Dashboard:
    """The WSGI application over the log at ``db``; ``token`` required on every request if set.

    >>> import tempfile, greenagents as ga
    >>> db = tempfile.mkdtemp() + "/runs.db"
    >>> _ = ga.configure(tracking=f"sqlite:///{db}")
    >>> ga.tracking.record(ga.Result(target="demo.echo", value="hi")); ga.tracking.flush()
    True
    >>> app = Dashboard(db)   # serve it: gevent.pywsgi.WSGIServer(("127.0.0.1", 8765), app)
    >>> app.runs.refresh(); len(app.runs.runs)
    1
    >>> _ = ga.configure(tracking=None)
    """

    def __init__(self, db: str, *, token: str | None = None):
        self.store = Store(db)
        self.runs = Runs(self.store)
        self.token = token or None
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("greenagents.dashboard"), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(money=_money, seconds=_seconds, when=_when, pretty=_pretty,
                                      target=command_target)
        self.templates.globals.update(query=self._query, db=self.store.path)

    @staticmethod
    def _query(params: dict[str, Any], **changes: Any) -> str:
        merged = {**params, **changes}
        return urlencode({key: value for key, value in merged.items() if value not in ("", None)})

    # ------------------------------------------------------------------------------ plumbing

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        extra: list[tuple[str, str]] = []
        try:
            extra = self._authorize(environ, params)
            status, content_type, body, headers = self._route(environ, params)
        except _Response as answer:
            status, content_type, headers = answer.status, "text/plain; charset=utf-8", answer.headers
            body = [answer.text.encode()]
        start_response(_STATUS[status], [("Content-Type", content_type), *_SECURITY_HEADERS,
                                         *headers, *extra])
        return body

    def _authorize(self, environ: dict[str, Any], params: dict[str, str]) -> list[tuple[str, str]]:
        if self.token is None:
            return []
        offered = params.pop("token", "")
        header = environ.get("HTTP_AUTHORIZATION", "")
        cookies = dict(part.strip().split("=", 1) for part in environ.get("HTTP_COOKIE", "").split(";")
                       if "=" in part)
        cookie = unquote(cookies.get(_COOKIE, ""))
        for candidate in (offered, header.removeprefix("Bearer ").strip(), cookie):
            if candidate and hmac.compare_digest(candidate.encode(), self.token.encode()):
                if candidate == offered:  # kept, so the page's links and refreshes need no token
                    return [("Set-Cookie", f"{_COOKIE}={quote(offered)}; HttpOnly; SameSite=Strict; "
                                           "Path=/")]
                return []
        raise _Response(403, "greenagents dashboard: a token is required; open the URL printed by "
                             "`greenagents dashboard` (it ends in ?token=...)")

    def _route(self, environ: dict[str, Any],
               params: dict[str, str]) -> tuple[int, str, Iterable[bytes], list[tuple[str, str]]]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if method == "POST":
            match = re.fullmatch(r"/runs/([^/]+)/rerun", path)
            if not match:
                raise _Response(405, "only a run's rerun link is a POST")
            self._same_origin(environ)
            return self._page("rerun.html", params, **self._rerun(match.group(1)))
        if method not in ("GET", "HEAD"):
            raise _Response(405, f"{method} is not supported")
        self.runs.refresh()
        if path == "/":
            ordered = self.runs.ordered()
            return self._page("overview.html", params, runs=ordered[:_RUNS_SHOWN],
                              total=len(ordered), live=any(run.running for run in ordered))
        if path == "/api/runs":
            return self._json([_run_json(run) for run in self.runs.ordered()])
        if match := re.fullmatch(r"/runs/([^/]+)", path):
            return self._page("run.html", params, **self._run_page(match.group(1)))
        if path == "/calls":
            return self._page("calls.html", params, **self._calls(params))
        if match := re.fullmatch(r"/calls\.(csv|json)", path):
            return self._export(CallFilter.of(params), match.group(1))
        if match := re.fullmatch(r"/calls/(\d+)", path):
            call = self.store.call(int(match.group(1)))
            if call is None:
                raise _Response(404, f"no call {match.group(1)} in this log")
            return self._page("call.html", params, call=call,
                              history=json.loads(call.get("history") or "[]"))
        raise _Response(404, f"no page at {path}")

    @staticmethod
    def _same_origin(environ: dict[str, Any]) -> None:
        """Refuse a POST another site's page made (the browser sends its Origin)."""
        origin = environ.get("HTTP_ORIGIN")
        if origin and origin.split("://", 1)[-1] != environ.get("HTTP_HOST"):
            raise _Response(403, "cross-site request refused")

    def _page(self, name: str, params: dict[str, str], **context: Any
              ) -> tuple[int, str, Iterable[bytes], list[tuple[str, str]]]:
        text = self.templates.get_template(name).render(
            partial=params.get("partial") == "1", live=context.pop("live", False), **context)
        return 200, "text/html; charset=utf-8", [text.encode()], []

    @staticmethod
    def _json(value: Any) -> tuple[int, str, Iterable[bytes], list[tuple[str, str]]]:
        return 200, "application/json", [json.dumps(value).encode()], []

    @staticmethod
    def _static(name: str) -> tuple[int, str, Iterable[bytes], list[tuple[str, str]]]:
        if not re.fullmatch(r"[\w.-]+", name):
            raise _Response(404, "no such file")
        try:
            data = (resources.files("greenagents.dashboard") / "static" / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise _Response(404, "no such file") from None
        return 200, mimetypes.guess_type(name)[0] or "application/octet-stream", [data], []

    # --------------------------------------------------------------------------------- pages

    def _stats(self, run_id: str) -> RunStats:
        run = self.runs.runs.get(run_id)
        if run is None:
            raise _Response(404, f"no run {run_id} in this log")
        return run

    def _run_page(self, run_id: str) -> dict[str, Any]:
        run = self._stats(run_id)
        models = sorted(run.models)
        by_model = {model: {second: value for (m, second), value in run.tokens.items() if m == model}
                    for model in models}
        cost = {model: {second: value for (m, second), value in run.cost.items() if m == model}
                for model in models}
        span = (run.started, run.finished)
        samples = {error: [self.store.call(call_id) for call_id in dict.fromkeys(ids)]
                   for error, ids in run.error_samples.items()}
        return {"run": run, "live": run.running, "samples": samples, "charts": [
            charts.over_time("calls finished per second",
                             {"ok": {s: n - run.failed_per_second.get(s, 0)
                                     for s, n in run.done_per_second.items()},
                              "failed": run.failed_per_second}, *span, rate=True,
                             colours=(charts.PALETTE[0], "#b03a48")),
            charts.over_time("calls in flight (mean; backoff sleeps included)",
                             {"in flight": run.inflight()}, *span, rate=True, legend=False),
            charts.histogram("latency histogram (up to p99)", run.histogram()),
            charts.over_time("tokens per second, by model", by_model, *span, rate=True),
            charts.over_time("cumulative cost, by model", cost, *span, cumulative=True,
                             fmt=lambda usd: f"${usd:.3g}")]}

    def _calls(self, params: dict[str, str]) -> dict[str, Any]:
        where = CallFilter.of(params)
        try:
            before = int(params["before"]) if params.get("before") else None
        except ValueError:
            raise _Response(400, "before= must be a call id") from None
        run = self.runs.runs.get(where.run)
        runs = [run] if run else list(self.runs.runs.values())
        options = {name: sorted({key for r in runs for key in getattr(r, name)})
                   for name in ("models", "agents", "errors")}
        return {"page": self.store.page(where, before), "where": where,
                "filters": where.params(), "options": options}

    def _export(self, where: CallFilter, kind: str
                ) -> tuple[int, str, Iterable[bytes], list[tuple[str, str]]]:
        rows = self.store.export(where)
        name = f"calls-{where.run or 'all'}.{kind}"
        headers = [("Content-Disposition", f'attachment; filename="{name}"')]
        if kind == "json":
            return 200, "application/json", _json_lines(rows), headers
        return 200, "text/csv; charset=utf-8", _csv_lines(rows), headers

    def _rerun(self, run_id: str) -> dict[str, Any]:
        """Write the failed calls' inputs of ``run_id`` as JSONL, one file per agent."""
        directory = os.path.dirname(self.store.path)
        files: dict[str, tuple[str, int]] = {}
        handles: dict[str, io.TextIOWrapper] = {}
        try:
            for agent, inputs in self.store.failed_inputs(run_id):
                if agent not in handles:
                    safe = re.sub(r"[^\w.-]", "_", f"rerun-{run_id}-{agent.rpartition('.')[2]}")
                    path = os.path.join(directory, f"{safe}.jsonl")
                    handles[agent] = open(path, "w", encoding="utf-8")  # noqa: SIM115
                    files[agent] = (path, 0)
                handles[agent].write(inputs + "\n")
                files[agent] = (files[agent][0], files[agent][1] + 1)
        except OSError as exc:
            raise _Response(400, f"cannot write the rerun file in {directory}: {exc}") from None
        finally:
            for handle in handles.values():
                handle.close()
        commands = [(agent, count, "greenagents run {} --input {} --output {}".format(
            shlex.quote(command_target(agent)), shlex.quote(path),
            shlex.quote(path.removesuffix(".jsonl") + ".out.jsonl")))
            for agent, (path, count) in files.items()]
        return {"run_id": run_id, "commands": commands, "payloads": self.store.has("inputs")}


def _run_json(run: RunStats) -> dict[str, Any]:
    return {"run_id": run.run_id, "state": run.state, "calls": run.calls, "ok": run.ok,
            "failed": run.failed, "tokens": run.tokens_total,
            "cost_usd": run.cost_usd if run.priced else None, "duration_s": run.duration_s,
            "started": run.started, "finished": run.finished}


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer: Any = None
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(row))
            writer.writeheader()
        writer.writerow(row)
        if buffer.tell() > 1 << 16:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _json_lines(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    yield b"["
    for n, row in enumerate(rows):
        yield (b"," if n else b"") + json.dumps(row).encode()
    yield b"]\n"


def serve(db: str, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          announce: Callable[[str], None] = print) -> None:
    """Serve the dashboard over ``db`` until interrupted; ``announce`` gets the URL to open.

    Any host but loopback needs a ``token`` (or :data:`TOKEN_ENV`): the log holds prompts.
    """
    from gevent.pywsgi import WSGIServer

    if token is None and (secret := from_environment(DashboardSettings).dashboard_token):
        token = secret.get_secret_value() or None
    if token is None and not _loopback(host):
        raise ConfigError(f"--host {host} would show the log to the network; pass --token SECRET "
                          f"(or set {TOKEN_ENV}), or keep the default --host 127.0.0.1")
    app = Dashboard(db, token=token)
    app.runs.refresh(0)  # fold the log in before the first page, not during it
    server = WSGIServer((host, port), app, log=None)
    server.init_socket()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/" + (f"?token={quote(token)}" if token else "")
    announce(f"greenagents dashboard over {app.store.path}: {url}")
    server.serve_forever()
