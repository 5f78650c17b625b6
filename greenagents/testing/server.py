"""The simulator's HTTP side: a gevent WSGI app that routes, steers, delays, faults and answers.

One request goes: route → auth → parse → compose the answer → rate limits → fault roll → latency
→ render (whole body or paced server-sent events). Every step that can fail answers in the
provider's own error shape; a bug answers 500 in that shape too, never with a traceback, and never
takes the server down. Steering headers let one test bend one request:

- ``X-Sim-Latency: <seconds>`` replaces the drawn time to first token;
- ``X-Sim-Fault: <name>`` forces that fault (still limited by ``fault_attempts``);
- ``X-Sim-Retry-After: <seconds>`` replaces the delay announced by the ``rate_limit`` fault.

>>> app = SimApp(SimOptions())
>>> sorted(app.snapshot())[:3]
['batches', 'by_fault', 'by_model']
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer
from gevent.socket import wait_read

from greenagents.testing import request_headers
from greenagents.testing.answers import compose
from greenagents.testing.anthropic_api import AnthropicDialect
from greenagents.testing.batches import PREFIXES, BatchStore
from greenagents.testing.faults import ANSWER_FAULTS, FAULTS, HTTP_FAULTS, FaultPlan
from greenagents.testing.latency import Latency
from greenagents.testing.limits import RateLimiter
from greenagents.testing.limits import headers as rate_headers
from greenagents.testing.openai_api import OpenAIDialect
from greenagents.testing.options import MODELS, SimOptions
from greenagents.testing.pacer import Pacer, Stream, Wire
from greenagents.testing.responses_api import ResponsesDialect
from greenagents.testing.shapes import Answer, Chat, Dialect, ErrorKind, Event, InvalidRequest, digest
from greenagents.testing.stats import Stats
from greenagents.testing.utility_api import ROUTES as UTILITY_ROUTES

StartResponse = Callable[..., Any]
log = logging.getLogger("greenagents.testing")

OPENAI: Dialect = OpenAIDialect()
ANTHROPIC: Dialect = AnthropicDialect()
_COMPLETIONS = {"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC,
                "/v1/responses": ResponsesDialect()}
_FAULT_ERRORS: dict[str, ErrorKind] = {"rate_limit": "rate_limit", "server_error": "server_error",
                                       "overloaded": "overloaded", "quota": "quota"}
#: What providers say when the account is out of credit (the ``quota`` fault).
_NO_CREDIT = {"openai": "You exceeded your current quota, please check your plan and billing details.",
              "anthropic": "Your credit balance is too low to access the Anthropic API. Please go to "
                           "Plans & Billing to upgrade or purchase credits."}
_SOCKET_KEY = "greenagents.sim.socket"
_WIRE_KEY = "greenagents.sim.wire"
#: Listen queue length (Linux caps it at ``net.core.somaxconn``, 4,096 by default).
BACKLOG = 4096
#: Upper bound of the ``hang`` fault when the client never hangs up (server stop ends it sooner).
HANG_S = 3600.0


class Drop(Exception):
    """Raised inside the app to end the connection with no (further) HTTP answer."""

    def __init__(self, *, reset: bool) -> None:
        super().__init__("reset" if reset else "close")
        self.reset = reset


class Last(bytes):
    """An answer's last chunk: the request counts as finished before it is sent."""


@dataclass
class Reply:
    """Status, headers and body chunks of one answer, before it goes on the wire."""

    status: int
    headers: list[tuple[str, str]]
    chunks: Iterable[bytes]


class SimApp:
    """The WSGI application: one per simulator, holding its stats, fault plan and limiter."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.stats = Stats()
        self.faults = FaultPlan(options.faults, options.fault_attempts, options.seed)
        self.limiter = RateLimiter(options.rpm, options.tpm, options.rate_window)
        self.latency = Latency(options.latency, options.latency_p99, options.token_latency)
        self.batches = BatchStore(options)
        self.pacer = Pacer()

    def snapshot(self) -> dict[str, Any]:
        """The stats as served by ``GET /_sim/stats`` (``batches``: uploads and creates)."""
        return {**self.stats.snapshot(), "batches": self.batches.counts()}

    def reset(self) -> None:
        """Zero stats, forget request attempts and empty rate-limit windows."""
        self.stats.reset()
        self.faults.reset()
        self.limiter.reset()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        dialect = ANTHROPIC if path == "/v1/messages" or "HTTP_ANTHROPIC_VERSION" in environ \
            else OPENAI
        if path in _COMPLETIONS and method == "POST":
            return self._completion(environ, start_response, _COMPLETIONS[path])
        if path.startswith(PREFIXES):
            return _send(start_response, self._batch_api(environ, path, method, dialect))
        if path in UTILITY_ROUTES and method == "POST":
            return _send(start_response, self._utility(environ, dialect, UTILITY_ROUTES[path]))
        reply = self._simple(path, method, dialect)
        return _send(start_response, reply)

    def _simple(self, path: str, method: str, dialect: Dialect) -> Reply:
        """Everything but completions: model list, control endpoints, 404 and 405."""
        routes: dict[str, tuple[str, Callable[[], Any]]] = {
            "/": ("GET", _index),
            "/v1/models": ("GET", lambda: dialect.models(MODELS)),
            "/_sim/stats": ("GET", self.snapshot),
            "/_sim/first_tokens": ("GET", lambda: self.stats.first_tokens),
            "/_sim/timeline": ("GET", self.stats.moments),
            "/_sim/reset": ("POST", self._reset_and_snapshot),
        }
        if path in _COMPLETIONS or path in UTILITY_ROUTES:  # reached only with the wrong method
            routes[path] = ("POST", dict)
        if path not in routes:
            return _error(dialect, "not_found", f"Unknown request URL: {path}.")
        allowed, handler = routes[path]
        if method != allowed:
            reply = _error(dialect, "method_not_allowed", f"{method} is not allowed on {path}.")
            reply.headers.append(("Allow", allowed))
            return reply
        return _json(200, handler())

    def _batch_api(self, environ: dict[str, Any], path: str, method: str,
                   dialect: Dialect) -> Reply:
        """Files and batches (:mod:`greenagents.testing.batches`), behind the same API key."""
        refused = self._refused(environ, dialect)
        if refused is not None:
            return refused
        try:
            status, body = self.batches.handle(path, method, environ)
        except Exception:
            log.exception("simulator bug while answering %s", path)
            return _error(dialect, "server_error", "The simulator failed; see its log.")
        if status == 499:  # the client hung up while its create waited: nobody to answer
            raise Drop(reset=False)
        if isinstance(body, bytes):
            return Reply(status, [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))], [body])
        return _json(status, body)

    def _utility(self, environ: dict[str, Any], dialect: Dialect,
                 handler: Callable[[Any], dict[str, Any]]) -> Reply:
        """An endpoint with no model turn (embeddings, token counts): no latency, no faults."""
        refused = self._refused(environ, dialect)
        if refused is not None:
            return refused
        try:
            return _json(200, handler(json.loads(environ["wsgi.input"].read())))
        except ValueError as exc:  # json.JSONDecodeError and InvalidRequest
            return _error(dialect, "invalid_request", _client_message(exc))

    def _refused(self, environ: dict[str, Any], dialect: Dialect) -> Reply | None:
        """401 in the provider's shape when the request lacks the simulator's key."""
        if self._authorized(dialect.api_key(_headers(environ))):
            return None
        return _error(dialect, "authentication", "Invalid API key: pass the key the "
                      "simulator was started with (it is not shown here).")

    def _reset_and_snapshot(self) -> dict[str, Any]:
        self.reset()
        return self.snapshot()

    def _completion(self, environ: dict[str, Any], start_response: StartResponse,
                    dialect: Dialect) -> Iterator[bytes]:
        """Serve one completion, keeping the in-flight count right however it ends.

        The request is counted as finished just *before* its :class:`Last` chunk goes out, so a
        client that has its whole answer already sees it in ``/_sim/stats``.
        """
        self.stats.begin()
        status = "dropped"
        try:
            try:
                reply = self._answer(environ, dialect)
            except (Drop, gevent.GreenletExit):
                raise
            except Exception:
                log.exception("simulator bug while answering %s", environ.get("PATH_INFO"))
                reply = _error(dialect, "server_error", "The simulator failed; see its log.")
            status = str(reply.status)
            for chunk in _send(start_response, reply):  # a stream's chunks go out as made
                if type(chunk) is Last:
                    self.stats.end(status)
                    status = ""
                yield chunk
        except (GeneratorExit, OSError):  # a write failed (pywsgi's or the pacer's): the client
            status = status and "disconnected"  # hung up
            raise
        finally:
            if status:
                self.stats.end(status)

    def _answer(self, environ: dict[str, Any], dialect: Dialect) -> Reply:
        headers = _headers(environ)
        key = dialect.api_key(headers)
        if not self._authorized(key):
            return _error(dialect, "authentication", "Invalid API key: pass the key the "
                          "simulator was started with (it is not shown here).")
        raw: bytes = environ["wsgi.input"].read()
        try:
            chat = dialect.parse(json.loads(raw))
            forced = _steering(headers)
        except ValueError as exc:  # json.JSONDecodeError and InvalidRequest
            return _error(dialect, "invalid_request", _client_message(exc))
        answer = compose(chat, self.options.seed, words=self.options.answer_words)
        self.stats.by_model[chat.model] += 1
        now = time.monotonic()
        wait = self.limiter.admit(key or "", answer.prompt_tokens + answer.completion_tokens, now)
        stated = rate_headers(dialect.name, self.limiter.standing(key or "", now), time.time())
        if wait is not None:
            reply = _rate_limited(dialect, wait, "Rate limit reached (requests or tokens per "
                                  "minute for this API key).")
            reply.headers += stated
            return reply
        # a request is its conversation: clients that say the same thing (an SDK, an agent with
        # a schema, raw JSON) meet the same faults, so benchmarks compare like with like
        request_hash = hashlib.sha256(f"{chat.model}\n{chat.prompt}".encode()).hexdigest()
        fault = self.faults.choose(request_hash, forced)
        if fault is not None:
            self.stats.by_fault[fault] += 1
        if fault in HTTP_FAULTS:
            reply = self._fault_error(dialect, fault, headers)
            reply.headers += stated
            return reply
        steered = _float_header(headers, "x-sim-latency")
        gevent.sleep(self.latency.first_token(lambda: random.Random(digest(
            self.options.seed, "latency", request_hash, self.faults.seen[request_hash])))
            if steered is None else steered)
        if fault == "reset":
            raise Drop(reset=True)
        if fault == "hang":
            _hang(environ)
        if fault in ANSWER_FAULTS:
            answer = compose(chat, self.options.seed, invalid=fault == "schema_invalid",
                             fault=fault, words=self.options.answer_words)
        self.stats.prompt_tokens += answer.prompt_tokens
        self.stats.completion_tokens += answer.completion_tokens
        reply = self._success(dialect, chat, answer, fault, environ.get(_WIRE_KEY))
        reply.headers += stated
        return reply

    def _authorized(self, key: str | None) -> bool:
        expected = self.options.api_key
        return expected is None or hmac.compare_digest((key or "").encode(), expected.encode())

    def _fault_error(self, dialect: Dialect, fault: str, headers: dict[str, str]) -> Reply:
        if fault == "rate_limit":
            wait = _float_header(headers, "x-sim-retry-after")
            return _rate_limited(dialect, self.options.retry_after if wait is None else wait,
                                 "Rate limit reached (simulated fault).")
        if fault == "quota":
            return _error(dialect, "quota", _NO_CREDIT[dialect.name])
        return _error(dialect, _FAULT_ERRORS[fault], f"Simulated {fault.replace('_', ' ')}.")

    def _success(self, dialect: Dialect, chat: Chat, answer: Answer, fault: str | None,
                 wire: Wire | None) -> Reply:
        events: Iterable[Event]
        if chat.stream:  # built as sent: a thousand answers due at once start at once
            events = dialect.events(chat, answer)
            headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        else:
            events = [(json.dumps(dialect.render(chat, answer)).encode(), answer.completion_tokens)]
            headers = [("Content-Type", "application/json")]
        if fault == "malformed":
            events = _garbled(list(events), sse=chat.stream)
        if not chat.stream:
            headers.append(("Content-Length", str(sum(len(data) for data, _ in events))))
        cut = fault == "truncated"
        if cut:  # the middle event is sent half, then the connection drops
            events = list(events)
            data, tokens = events[len(events) // 2]
            events = [*events[:len(events) // 2], (data[: len(data) // 2], tokens)]
        return Reply(200, headers, self._paced(events, cut=cut, key=chat.last_user, wire=wire))

    def _paced(self, events: Iterable[Event], *, cut: bool, key: str,
               wire: Wire | None) -> Iterator[bytes]:
        """Yield the answer's events as the model would produce them (:mod:`.pacer`: the
        pacer writes most of a stream straight to ``wire``); ``cut``: the connection is dropped
        after the last."""
        stream = Stream(events, self.latency.per_token,
                        on_first=functools.partial(self.stats.first_token, key))
        for burst in self.pacer.pace(stream, wire):
            if not burst.final:
                yield burst.data
            elif cut:
                yield burst.data
                raise Drop(reset=False)
            else:
                yield Last(burst.data)


class SimHandler(WSGIHandler):
    """pywsgi's handler, plus what faults need: the socket in the environ and :class:`Drop`."""

    _held: list[bytes] | None = None  # writes joined into one (see _write_with_headers)
    _fd = -1  # the socket's file descriptor

    def handle(self) -> None:
        self._fd = self.socket.fileno()  # the pacer writes to it: no lookup per token
        # Streams are many small writes: without TCP_NODELAY, Nagle holds each one until the
        # client ACKs the last, which a delayed ACK puts off by ~40 ms (the end of every stream).
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # pywsgi names it so
        """The request's headers, as pywsgi's own parser makes them (:mod:`.request_headers`)."""
        return request_headers.parse(fp)

    def _sendall(self, data: bytes) -> None:
        if self._held is not None:  # the head, held to go out with the first data
            self._held.append(data)
            return
        # Every streamed event is one write: try the socket once directly (it is non-blocking
        # under gevent) and leave only the rest, or an error, to pywsgi's path (gevent's
        # sendall waits for room): ~3 µs of CPU per event instead of ~8 (loopback, measured).
        try:
            sent = os.write(self._fd, data)
        except OSError:
            sent = 0
        self.response_length += sent
        if sent < len(data):
            self.send_rest(data[sent:])

    def _write_with_headers(self, data: bytes) -> None:
        # pywsgi sends the head and the first data in two writes: one is enough, and the
        # client's first read then has both
        held: list[bytes] = []
        self._held = held
        try:
            super()._write_with_headers(data)  # type: ignore[misc]  # untyped in gevent
        finally:
            self._held = None
        self._sendall(b"".join(held))

    def _write(self, data: bytes) -> None:
        if type(data) is Last and data and self.response_use_chunked:
            # the answer's last chunk and the chunked body's end in one write, not two
            self._sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
            self.response_use_chunked = False  # the end is out: pywsgi must not send it again
            return
        super()._write(data)  # type: ignore[misc]  # untyped in gevent

    # the pacer's Wire (greenagents.testing.pacer): writes of a response outside pywsgi's loop

    def write_now(self, data: bytes) -> bytes:
        """Frame ``data`` as pywsgi's ``_write`` does (one HTTP/1.1 chunk, unless HTTP/1.0) and
        make one non-blocking write; return the framed rest (all of it when the socket is
        full or broken: :meth:`send_rest` meets it)."""
        if not data:  # (an empty chunk would end the body)
            return data
        raw = b"%x\r\n%s\r\n" % (len(data), data) if self.response_use_chunked else data
        try:
            sent = os.write(self._fd, raw)
        except OSError:
            return raw
        self.response_length += sent
        return raw[sent:]

    def send_rest(self, raw: bytes) -> None:
        """pywsgi's own write, which waits for room and accounts for a broken socket."""
        super()._sendall(raw)  # type: ignore[misc]  # untyped in gevent

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[_SOCKET_KEY] = self.socket
        environ[_WIRE_KEY] = self
        return environ

    def run_application(self) -> None:
        try:
            super().run_application()
        except Drop as drop:
            # pywsgi closes the socket once we say so; SO_LINGER 0 turns that close into an RST.
            self.close_connection = True
            if drop.reset:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))


class SimServer(WSGIServer):
    """pywsgi's server, marking each accepted connection on the app's timeline (when it was
    accepted, not when its handler first ran: a server behind schedule shows as the gap), and
    draining its whole listen queue each time it wakes up.

    gevent accepts 100 connections per wake-up, then runs their handlers before it looks again:
    10,000 clients connecting at once filled the listen queue (4,096, the kernel's cap) faster
    than that, and each connection the kernel dropped cost its client a 1 s SYN retransmit
    (bench/fanout.py: up to 3,293 at N = 10,000). Accepting up to a whole queue per wake-up
    measured fewer drops (0 against 593 in 4 + 4 alternating runs) and ~12% less simulator CPU.
    """

    max_accept = BACKLOG

    def do_read(self) -> Any:
        accepted = super().do_read()
        if accepted and isinstance(self.application, SimApp):
            self.application.stats.mark("accepted")
        return accepted


def make_server(app: Callable[..., Any], host: str, port: int) -> WSGIServer:
    """A started-ready WSGI server for ``app``: quiet access log, errors to logging, deep backlog
    (thousands of clients connect at once in the load benchmarks)."""
    return SimServer((host, port), app, handler_class=SimHandler, log=None, error_log=log,
                     backlog=BACKLOG)


def _index() -> dict[str, Any]:
    """``GET /``: what is served here, for someone who points a browser or curl at the root."""
    return {"server": "greenagents simulator",
            "endpoints": {"POST /v1/chat/completions": "OpenAI Chat Completions",
                          "POST /v1/messages": "Anthropic Messages",
                          "GET /v1/models": "model list", "GET /_sim/stats": "counters",
                          "POST /_sim/reset": "zero the counters"},
            "clients": {"OPENAI_BASE_URL": "http://HOST:PORT/v1",
                        "ANTHROPIC_BASE_URL": "http://HOST:PORT"}}


def _send(start_response: StartResponse, reply: Reply) -> Iterator[bytes]:
    start_response(f"{reply.status} {_reason(reply.status)}", reply.headers)
    yield b""  # the body may be empty; this makes "the last chunk" always exist
    yield from reply.chunks


def _reason(status: int) -> str:
    return "Overloaded" if status == 529 else HTTPStatus(status).phrase


def _json(status: int, body: Any) -> Reply:
    data = json.dumps(body).encode()
    return Reply(status, [("Content-Type", "application/json"),
                          ("Content-Length", str(len(data)))], [Last(data)])


def _error(dialect: Dialect, kind: ErrorKind, message: str) -> Reply:
    return _json(*dialect.error(kind, message))


def _rate_limited(dialect: Dialect, seconds: float, message: str) -> Reply:
    """429 with both ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``."""
    reply = _error(dialect, "rate_limit", f"{message} Please try again in {seconds:.3f}s.")
    reply.headers += [("Retry-After", str(math.ceil(seconds))),
                      ("retry-after-ms", str(math.ceil(seconds * 1000)))]
    return reply


def _garbled(events: list[Event], *, sse: bool) -> list[Event]:
    """The ``malformed`` fault: the middle event is cut in half (still framed as an event)."""
    middle = len(events) // 2
    data, tokens = events[middle]
    broken = data[: len(data) // 2] + (b"\n\n" if sse else b"")
    return [*events[:middle], (broken, tokens), *events[middle + 1:]]


def _hang(environ: dict[str, Any]) -> None:
    """The ``hang`` fault: answer nothing until the client hangs up (its socket turns readable
    at EOF), then drop. Only this request's greenlet waits; the server carries on."""
    sock = environ[_SOCKET_KEY]
    with contextlib.suppress(TimeoutError):
        wait_read(sock.fileno(), timeout=HANG_S)
    raise Drop(reset=False)


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    return {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
            if k.startswith("HTTP_")}


def _float_header(headers: dict[str, str], name: str) -> float | None:
    value = headers.get(name)
    try:
        return None if value is None else max(float(value), 0.0)
    except ValueError:
        raise InvalidRequest(f"header {name} must be a number of seconds, got {value!r}") from None


def _steering(headers: dict[str, str]) -> str | None:
    """Validate the ``X-Sim-*`` headers up front (400 if wrong); return the forced fault."""
    name = headers.get("x-sim-fault")
    if name is not None and name not in FAULTS:
        raise InvalidRequest(f"X-Sim-Fault: unknown fault {name!r}; valid: {', '.join(FAULTS)}")
    _float_header(headers, "x-sim-latency")
    _float_header(headers, "x-sim-retry-after")
    return name


def _client_message(exc: ValueError) -> str:
    if isinstance(exc, InvalidRequest):
        return str(exc)
    return f"We could not parse the JSON body of your request ({exc})."
