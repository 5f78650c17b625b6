"""The shared HTTP transport: one kept-alive urllib3 pool per base URL, timeouts, error mapping.

Every provider call of the process goes through :func:`post_json`. Pools are keyed by origin
(scheme, host, port) and created lazily, once, behind :func:`pool_for`, so a thousand concurrent
calls to one API share one pool of kept-alive connections instead of opening a thousand. Each
:class:`~greenagents.Client` has its own pools (:class:`Pools`, its part of
:mod:`greenagents.state`); the module functions use the current client's.

Pitfalls this module guards against:

* **urllib3 is imported lazily**, on the first request, not when this module is imported: importing
  urllib3 imports ``ssl``, and ``ssl`` must not be imported before ``gevent.monkey.patch_all()``.
* **Pool size.** A pool smaller than the number of concurrent calls makes urllib3 open extra
  connections and then throw them away ("Connection pool is full, discarding connection"), which
  defeats keep-alive. Unless ``settings().http_pool_size`` says otherwise, pools hold
  ``max(max_concurrency, 10,000)`` connections and never block (``block=False``): a batch may be
  far wider than ``max_concurrency`` (``ga.batch(..., max_concurrent=5000)``), and an idle slot
  costs only a queue entry (10,000 of them: ~10 ms once, ~100 KB); connections are opened on
  demand. A pool is rebuilt bigger when ``max_concurrency`` grows past it.
* **No retries here.** urllib3 runs with ``retries=False`` and ``redirect=False``: the retry layer
  (``greenagents.retry``) is the one owner of retrying, so a failure is reported exactly once.
* **Timeouts bound the whole attempt.** ``timeout`` is the time one request may take from
  connecting to its last byte, not the gap between two bytes (a server dripping a byte a second
  never trips a read timeout). In a patched process a ``gevent.Timeout`` enforces it. Unpatched
  (the thread fallback) :mod:`greenagents.watchdog` cuts a connection whose headers are still
  coming at the deadline, and the deadline is checked between reads of the body, each bounded by
  the socket timeout (worst case about twice ``timeout``). ``connect_timeout`` also bounds
  opening the connection.
* **Answers are read in bounded pieces.** A gzip bomb, an 80 MB JSON answer or an endless chunked
  body must not take the machine: the body is read (and decompressed, urllib3 >= 2.6 bounds the
  output of each read) 64 KiB at a time and the read stops with
  :class:`~greenagents.errors.ResponseTooLarge` past ``max_response_bytes``; see
  :func:`read_bounded`, which streaming reuses.

>>> from greenagents.http import HttpResponse, raise_for_status
>>> raise_for_status(HttpResponse(200, {}, b"{}"), provider="openai")
>>> raise_for_status(HttpResponse(429, {"Retry-After": "2"}, b""), provider="openai")
Traceback (most recent call last):
...
greenagents.errors.RateLimited: openai answered 429 Too Many Requests; slow down: lower \
max_concurrency or wait 2.0 s before retrying
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import gevent

from . import state, transport, watchdog
from .config import Settings, settings
from .errors import (
    AuthError,
    BadRequest,
    ConnectionFailed,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    ResponseTooLarge,
    ServerError,
    Timeout,
    redact,
)
from .patching import available

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse, HTTPConnectionPool

__all__ = ["JSON_HEADERS", "Headers", "HttpResponse", "attempt_timeout", "close_pools",
           "gevent_pool_for", "pool_for", "post_json", "raise_for_status", "read_bounded"]

# Decoded bytes read at a time: bounds what one read (and one decompression step) can allocate.
READ_CHUNK = 64 * 1024

# Smallest pool built when http_pool_size is None: no "pool is full" discards up to 10,000 wide.
MIN_AUTO_POOL_SIZE = 10_000

# urllib3 prefixes messages with "HTTPConnection(host='h', port=1): "; the origin is already said.
_POOL_PREFIX = re.compile(r"^\w+\(host=[^)]*\):\s*")



class Pools:
    """One client's connection pools: origin -> (size, pool). :meth:`close` closes them all.

    Not urllib3's ``PoolManager``: finding the pool of a URL costs 2.5 µs here against 19.7 µs for
    ``PoolManager.connection_from_url`` (it builds a ``PoolKey`` per request; timeit, 2026-11-30),
    about 3% of an agent call's CPU, and growing a pool when ``max_concurrency`` grows is ours anyway.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_origin: dict[tuple[str, str, int], tuple[int, HTTPConnectionPool]] = {}

    def close(self) -> None:
        with self.lock:
            entries = list(self.by_origin.values())
            self.by_origin.clear()
        for _, pool in entries:
            pool.close()


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive response headers.

    Not urllib3's ``HTTPHeaderDict``: copying one costs the same (8.1 µs against 7.6 µs here for
    13 headers; timeit, 2026-11-30), one type serves both transports, and this module must not
    import urllib3 (and ssl) before the patch. Keeping urllib3's own dict uncopied would save
    ~6.5 µs a call (~1%); not worth a second header type.

    >>> Headers({"Retry-After": "3"})["retry-after"]
    '3'
    """

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._data = {name.lower(): value for name, value in pairs}

    @classmethod
    def lowered(cls, names_in_lower_case: dict[str, str]) -> Headers:
        """Headers over a dict whose names are lower case already (taken, not copied)."""
        made = cls.__new__(cls)
        made._data = names_in_lower_case
        return made

    def __getitem__(self, name: str) -> str:
        return self._data[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Headers({self._data!r})"


@dataclass(frozen=True)
class HttpResponse:
    """A complete HTTP answer: status, case-insensitive headers, and the whole body as bytes.

    >>> HttpResponse(200, {"Content-Type": "application/json"}, b"{}").headers["content-type"]
    'application/json'
    """

    status: int
    headers: Mapping[str, str] = field(repr=False)  # a Headers: case-insensitive
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))


@functools.lru_cache(maxsize=256)
def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``; remembered, as every request of a call asks for it and
    a process talks to a few URLs (``urlsplit`` costs ~2 µs)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"cannot send a request to {url!r}: the URL must start with http:// or "
                         "https:// and name a host; check the base URL")
    return scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80)


def _origin_text(url: str) -> str:
    """``scheme://host:port`` of ``url``: safe to show (no path, query or user:password)."""
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _wanted_pool_size(current: Settings | None = None) -> int:
    current = current or settings()
    return current.http_pool_size or max(current.max_concurrency, MIN_AUTO_POOL_SIZE)


def pool_for(url: str) -> HTTPConnectionPool:
    """The shared, kept-alive connection pool of ``url``'s origin, created on first use.

    Creation is serialized by a lock, so concurrent first calls build one pool, not several. A
    pool is replaced by a bigger one when the wanted size grew (``configure(max_concurrency=...)``);
    connections still in use by the old pool are closed when returned.

    >>> pool_for("http://127.0.0.1:9/v1") is pool_for("http://127.0.0.1:9/other")
    True
    """
    key = _origin(url)
    size = _wanted_pool_size()
    pools = state.current().part(Pools)
    entry = pools.by_origin.get(key)
    if entry is not None and entry[0] >= size:
        return entry[1]
    old = None
    with pools.lock:
        entry = pools.by_origin.get(key)
        if entry is None or entry[0] < size:
            pool = transport.urllib3_pool(*key, size)
            pool.ConnectionCls = watchdog.watched(pool.ConnectionCls)
            old, entry = entry, (size, pool)
            pools.by_origin[key] = entry
    if old is not None:
        old[1].close()
    return entry[1]


def gevent_pool_for(url: str, current: Settings | None = None) -> transport.GeventPool | None:
    """The current client's geventhttpclient pool of ``url``'s origin when that is the chosen
    transport (see :mod:`greenagents.transport`), else None: urllib3's (:func:`pool_for`).
    ``current`` is the settings when the caller has them already (one lookup less a request)."""
    current = current or settings()
    if not transport.use_geventhttpclient(current.http_transport):
        return None
    return transport.gevent_pool(_origin(url), _wanted_pool_size(current), current.connect_timeout)


def close_pools() -> None:
    """Close every pool of the current client and forget it (``Client.close`` does it too). The
    next request builds a fresh pool.

    >>> close_pools()
    """
    state.current().part(Pools).close()
    state.current().part(transport.GeventPools).close()


def post_json(url: str, body: Mapping[str, Any], headers: Mapping[str, str], *,
              timeout: float | None = None, provider: str | None = None,
              hint: str | None = None) -> HttpResponse:
    """POST ``body`` as JSON to ``url`` over the shared pool; return the complete response.

    Any status is returned as is (see :func:`raise_for_status`); transport failures raise
    :class:`~greenagents.errors.ConnectionFailed` or :class:`~greenagents.errors.Timeout`, with
    ``hint`` (e.g. ``"check OPENAI_BASE_URL"``) appended to the message. ``timeout`` (default
    ``settings().timeout``) bounds the whole request, connect to last byte; the body is capped at
    ``settings().max_response_bytes`` (:class:`~greenagents.errors.ResponseTooLarge`). Headers are
    sent but never appear in errors.

    >>> post_json("http://127.0.0.1:9/v1/chat", {}, {}, provider="openai", hint="check X")
    Traceback (most recent call last):
    ...
    greenagents.errors.ConnectionFailed: openai: could not connect to http://127.0.0.1:9 \
(connection refused); is the server running? check X
    """
    return request("POST", url, transport.dumps(body), {**JSON_HEADERS, **headers}, timeout=timeout,
                   provider=provider, hint=hint)


#: What a JSON request says of its body and of the answer it wants (``headers`` may override).
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


def request(method: str, url: str, body: bytes | None, headers: Mapping[str, str], *,
            timeout: float | None = None, provider: str | None = None,
            hint: str | None = None, max_bytes: int | None = None) -> HttpResponse:
    """Send any request over the shared pool; what :func:`post_json` and the Batch APIs'
    uploads, polls and downloads use. Errors and timeouts as in :func:`post_json`; ``max_bytes``
    replaces ``max_response_bytes`` (one answer's cap) for bodies that are not one answer.

    >>> request("GET", "http://127.0.0.1:9/v1/batches", None, {}, provider="openai")
    Traceback (most recent call last):
    ...
    greenagents.errors.ConnectionFailed: openai: could not connect to http://127.0.0.1:9 \
(connection refused); is the server running?
    """
    current = settings()
    limit = current.timeout if timeout is None else timeout
    gevent_pool = gevent_pool_for(url, current)
    pool = pool_for(url) if gevent_pool is None else None
    path = request_target(pool, url)
    deadline = time.monotonic() + limit
    # patched: a gevent.Timeout bounds it all; unpatched: a watchdog bounds the wait for the
    # headers, a check between reads the body (see greenagents.watchdog)
    timer = gevent.Timeout(limit) if available() else None
    if timer is not None:
        timer.start()
    try:
        import urllib3

        with watchdog.deadline(deadline) if timer is None else _BOUNDED_BY_TIMER:
            if gevent_pool is not None:  # only when patched: a gevent.Timeout bounds it
                raw: Any = gevent_pool.urlopen(method, path, body=body, headers=headers)
            else:
                raw = pool.urlopen(  # type: ignore[union-attr]
                    method, path, body=body, headers=dict(headers), retries=False,
                    redirect=False, assert_same_host=False, preload_content=False,
                    timeout=urllib3.Timeout(connect=min(current.connect_timeout, limit),
                                            read=limit))
            data = _read_body(raw, current.max_response_bytes if max_bytes is None else max_bytes,
                              deadline=None if timer is not None else deadline, provider=provider)
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise attempt_timeout(url, provider, limit) from None
    except _Late:
        raise attempt_timeout(url, provider, limit) from None
    except Exception as exc:
        if timer is None and time.monotonic() >= deadline:  # the watchdog cut the connection
            raise attempt_timeout(url, provider, limit) from None
        mapped = transport_error(exc, url, provider, hint, limit)
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        if timer is not None:
            timer.close()
    found = raw.headers
    # geventhttpclient's answers come as a dict lower-cased already (transport._Whole)
    return HttpResponse(raw.status, Headers.lowered(found) if type(found) is dict
                        else Headers(found.items()), data)


#: What stands for the watchdog when a ``gevent.Timeout`` bounds the attempt: one shared
#: ``nullcontext`` (it holds no state), not one more object per request.
_BOUNDED_BY_TIMER = contextlib.nullcontext()


def request_target(pool: HTTPConnectionPool | None, url: str) -> str:
    """What follows the method on the request line: the path and query, or the whole URL when a
    plain-HTTP proxy forwards it (HTTPS through a proxy is tunnelled: the path alone)."""
    if pool is not None and pool.proxy is not None and pool.scheme == "http":
        return url
    return _path(url)


@functools.lru_cache(maxsize=256)
def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class _Late(Exception):
    """The attempt's deadline passed between two reads (the unpatched path's check)."""


def attempt_timeout(url: str, provider: str | None, limit: float) -> Timeout:
    """The error of an attempt that did not answer in full within ``limit`` seconds."""
    who = f"{provider}: " if provider else ""
    return Timeout(f"{who}{_origin_text(url)} did not answer in full within timeout={limit:g}s "
                   "(the whole attempt: connect, send, wait, read); retry, or raise the "
                   "timeout for long generations", provider=provider)


def _read_body(raw: BaseHTTPResponse, limit: int, *, deadline: float | None,
               provider: str | None) -> bytes:
    """The whole body, capped. A plain body of known size within the cap is read at once (~20 µs
    less than in pieces, the common case) when no deadline must be checked between reads (a
    ``gevent.Timeout`` bounds the attempt); anything else goes through :func:`read_bounded`."""
    length = raw.length_remaining
    if deadline is None and length is not None and length <= limit \
            and "content-encoding" not in raw.headers:
        try:
            return raw.read()
        finally:
            raw.release_conn()
    return b"".join(read_bounded(raw, limit, deadline=deadline, provider=provider))


def read_bounded(raw: BaseHTTPResponse, limit: int, *, deadline: float | None = None,
                 provider: str | None = None) -> Iterator[bytes]:
    """Yield the decoded body of ``raw`` (opened with ``preload_content=False``) piece by piece.

    Each piece is at most :data:`READ_CHUNK` decoded bytes, so memory stays bounded even for
    gzip/deflate/br bombs (urllib3 >= 2.6 caps the output of each decompression step). Past
    ``limit`` decoded bytes in total the connection is dropped and
    :class:`~greenagents.errors.ResponseTooLarge` raised. Past ``deadline`` (``time.monotonic()``)
    between two reads the connection is dropped too and ``_Late`` raised (the caller words
    it). The connection goes back to the pool when the body ends. Streaming reads use it as is.

    >>> import io, urllib3
    >>> raw = urllib3.HTTPResponse(io.BytesIO(b"x" * 5000), preload_content=False)
    >>> list(read_bounded(raw, 4096))
    Traceback (most recent call last):
    ...
    greenagents.errors.ResponseTooLarge: the answer is larger than max_response_bytes=4,096 \
bytes (decoded); raise it with ga.configure(max_response_bytes=...) or \
GREENAGENTS_MAX_RESPONSE_BYTES if such answers are expected
    """
    total = 0
    finished = False
    try:
        while chunk := raw.read1(READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise ResponseTooLarge(
                    f"{provider + ': ' if provider else ''}the answer is larger than "
                    f"max_response_bytes={limit:,} bytes (decoded); raise it with "
                    "ga.configure(max_response_bytes=...) or GREENAGENTS_MAX_RESPONSE_BYTES if "
                    "such answers are expected", provider=provider, status=raw.status)
            if deadline is not None and time.monotonic() > deadline:
                raise _Late
            yield chunk
        finished = True
    finally:
        if not finished:
            raw.close()  # the rest of the body is unread: the connection cannot be reused
        raw.release_conn()


def _failure_kind(exc: Exception) -> str | None:
    """What a urllib3 (or, failing that, a geventhttpclient) exception means: ``"resolve"``,
    ``"connect"``, ``"connect_timeout"``, ``"read_timeout"``, ``"tls"``, ``"broken"`` or None."""
    from urllib3 import exceptions as u3

    if isinstance(exc, u3.NameResolutionError):  # before NewConnectionError: it subclasses it
        return "resolve"
    if isinstance(exc, u3.NewConnectionError):  # before ConnectTimeoutError: it subclasses it
        return "connect"
    if isinstance(exc, u3.ConnectTimeoutError):
        return "connect_timeout"
    if isinstance(exc, u3.ReadTimeoutError):
        return "read_timeout"
    if isinstance(exc, u3.SSLError):
        return "tls"
    if isinstance(exc, (u3.ProtocolError, u3.ProxyError, u3.DecodeError)):
        return "broken"
    return transport.failure_kind(exc)


def transport_error(exc: Exception, url: str, provider: str | None, hint: str | None,
                    limit: float) -> ProviderError | None:
    """Map a transport's exception to ours; None for anything that is not a transport failure."""
    kind = _failure_kind(exc)
    where = _origin_text(url)
    who = f"{provider}: " if provider else ""
    tail = f" {hint}" if hint else ""
    if kind == "resolve":
        text = f"could not resolve the host of {where}; check the URL and your network;{tail}"
    elif kind == "connect":
        text = f"could not connect to {where} ({_reason(exc)}); is the server running?{tail}"
    elif kind == "connect_timeout":
        return Timeout(f"{who}no connection to {where} within the connect timeout; is the host "
                       f"reachable? raise connect_timeout if it is slow;{tail}", provider=provider)
    elif kind == "read_timeout":
        return attempt_timeout(url, provider, limit)
    elif kind == "tls":
        text = f"TLS handshake with {where} failed ({_reason(exc)}); check the URL's scheme and " \
               f"certificates;{tail}"
    elif kind == "broken":
        text = f"the connection to {where} broke mid-request ({_reason(exc)}); retrying usually " \
               "helps"
    else:
        return None
    return ConnectionFailed(who + text.rstrip(";"), provider=provider)


def _reason(exc: BaseException) -> str:
    """A short, secret-free cause: the innermost OS-level error's name or message."""
    inner = [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
    if inner or exc.__cause__ is not None:
        return _reason(inner[0] if inner else exc.__cause__)  # type: ignore[arg-type]
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in str(exc):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    name = type(exc).__name__
    text = _POOL_PREFIX.sub("", str(exc))[:160]
    return f"{name}: {text}" if text else name


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asked us to wait: ``retry-after-ms`` first, then ``Retry-After``.

    >>> retry_after_seconds(Headers({"retry-after-ms": "1500", "Retry-After": "9"}))
    1.5
    """
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return "529 Overloaded" if status == 529 else str(status)


def raise_for_status(response: HttpResponse, *, provider: str, message: str | None = None,
                     code: str | None = None, key_env: str | None = None,
                     api_key: str | None = None) -> None:
    """Raise the :mod:`greenagents.errors` class for a non-2xx ``response``; return for 2xx.

    ``message`` is the provider's own explanation (from its JSON error body); it is included after
    masking ``api_key`` and anything shaped like a key; ``code`` is its error code or type.
    ``key_env`` names the variable to check on 401/403.

    ==========================  ====================================================
    429 ``insufficient_quota``  QuotaExceeded (not retryable: billing, not speed)
    429                         RateLimited (retry_after from retry-after-ms / Retry-After)
    408                         Timeout
    409, 5xx, 529               ServerError (retryable)
    401, 403                    AuthError
    other 4xx, 3xx              BadRequest
    ==========================  ====================================================

    >>> raise_for_status(HttpResponse(401, {}, b""), provider="anthropic",
    ...                  message="invalid x-api-key", key_env="ANTHROPIC_API_KEY")
    Traceback (most recent call last):
    ...
    greenagents.errors.AuthError: anthropic answered 401 Unauthorized: invalid x-api-key; check \
ANTHROPIC_API_KEY
    """
    status = response.status
    if 200 <= status < 300:
        return
    said = f"{provider} answered {_status_text(status)}"
    if message:
        said += ": " + redact(message.strip()[:500].rstrip("."), api_key)
    kw: dict[str, Any] = {"status": status, "provider": provider}
    if status == 429 and code == "insufficient_quota":
        raise QuotaExceeded(f"{said}; the account is out of credit or over its spending limit: "
                            "fix its billing (retrying cannot help)", **kw)
    if status == 429:
        wait = retry_after_seconds(response.headers)
        todo = f"wait {wait:.1f} s before retrying" if wait is not None else "retry later"
        raise RateLimited(f"{said}; slow down: lower max_concurrency or {todo}",
                          retry_after=wait, **kw)
    if status == 408:
        raise Timeout(f"{said}; the provider timed out, retrying usually helps", **kw)
    if status == 409 or status >= 500:
        raise ServerError(f"{said}; the provider failed, retrying usually helps", **kw)
    if status in (401, 403):
        raise AuthError(f"{said}; check {key_env or 'the API key'}", **kw)
    if status == 404:
        raise BadRequest(f"{said}; check the model name and the base URL", **kw)
    if 300 <= status < 400:
        where = redact(response.headers.get("location", "elsewhere"), api_key)
        raise BadRequest(f"{said}; redirected to {where}: point the base URL there", **kw)
    raise BadRequest(f"{said}; the request was rejected, fix the model, messages or parameters",
                     **kw)
