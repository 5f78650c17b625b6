"""Which HTTP client carries a request, and how request and answer bodies become JSON.

:mod:`greenagents.http` owns a request's time limit, size cap and error messages; this module
owns the two things under it that can be swapped for speed without changing behaviour:

* **The client.** urllib3 is the default and the reference. `geventhttpclient
  <https://github.com/geventhttpclient/geventhttpclient>`_ (``pip install 'greenagents[fast]'``)
  is a gevent-native client with a C HTTP parser (llhttp, as in Node.js; Locust's
  ``FastHttpUser`` uses it for the same reason): it spends less CPU and memory per request.
  ``settings().http_transport`` picks: ``"auto"`` (the default) uses geventhttpclient when it is
  installed and the process is monkey-patched, urllib3 otherwise; ``"urllib3"`` and
  ``"geventhttpclient"`` force one (forcing a missing one is a ``ConfigError`` naming the
  extra). Both pass the same transport tests, streamed answers (:meth:`GeventPool.stream`) too.
* **JSON.** :func:`dumps` and :func:`loads` use orjson when it is installed (also in the
  ``fast`` extra), the standard library otherwise, with the same results: compact UTF-8 out,
  and whatever orjson refuses (NaN, lone surrogates, integers past 64 bits, non-string keys)
  goes through the standard library instead of failing.

Pitfalls this module guards against:

* **geventhttpclient only in a patched process.** Its sockets, pool and locks belong to gevent's
  hub; the unpatched thread fallback would share them across real threads. Unpatched, ``"auto"``
  and ``"geventhttpclient"`` both mean urllib3.
* **Its pool blocks when full** (urllib3's is built with ``block=False``): it is sized like
  urllib3's, ``max(max_concurrency, 10,000)`` or ``http_pool_size``, and rebuilt bigger when
  that grows, so a batch never waits on it.
* **It decodes neither gzip nor deflate.** An answer with a ``Content-Encoding`` (or without a
  ``Content-Length``) is handed to ``urllib3.HTTPResponse`` for decoding, so the size cap counts
  decoded bytes and bombs stop at the cap exactly as over urllib3.
* **Proxies come from the environment**, as for requests, httpx and the SDKs: ``HTTPS_PROXY``
  / ``HTTP_PROXY`` / ``ALL_PROXY`` (lower case too) and ``NO_PROXY``, read once per origin when
  its pool is built (:func:`proxy_for`), for both clients: plain HTTP is forwarded (absolute
  request URI), HTTPS tunnelled (``CONNECT``), credentials in the proxy URL sent as Basic auth.
* **No hidden retries.** It re-sends a request on a kept-alive connection the server had closed
  only for idempotent methods (GET); a POST is sent once, as over urllib3.

>>> dumps({"text": "é", "n": 1})
b'{"text":"\\xc3\\xa9","n":1}'
>>> loads(b'{"x": NaN}')
{'x': nan}
"""

from __future__ import annotations

import base64
import errno
import functools
import importlib.util
import json
import re
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import state
from .config import settings
from .errors import ConfigError
from .gevent_answers import HeaderLines, StreamedAnswer
from .patching import available, os_poll

if TYPE_CHECKING:
    import ssl

    from urllib3 import BaseHTTPResponse, HTTPConnectionPool

__all__ = ["GeventPool", "GeventPools", "dumps", "failure_kind", "gevent_pool", "loads",
           "proxy_for", "urllib3_pool", "use_geventhttpclient"]

#: Seconds a DNS answer is reused for new connections to one origin (aiohttp's default too).
DNS_TTL = 10.0

# what geventhttpclient checks a request's head against: RFC 9110's tokens, field values, targets
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(r"[^\x00-\x20\x7f]*")

_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                             errno.EADDRNOTAVAIL, errno.ETIMEDOUT})


# -- JSON ------------------------------------------------------------------------------------------

@functools.cache
def _orjson() -> Any:
    try:
        import orjson
    except ImportError:
        return None
    return orjson


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (orjson when installed, else the standard library)."""
    fast = _orjson()
    if fast is not None:
        try:
            # copied to fit: orjson's bytes keep their 4 KiB work buffer, held for the whole call
            return memoryview(fast.dumps(value)).tobytes()
        except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
            pass  # what orjson refuses, the standard library decides (and words the error)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud83d", legal JSON): sent as its escape
        return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON ``data`` (orjson when installed); raise ``ValueError`` when it is not JSON."""
    fast = _orjson()
    if fast is not None:
        try:
            return fast.loads(data)
        except ValueError:  # orjson.JSONDecodeError: invalid, or legal JSON orjson refuses
            pass
    return json.loads(data)


# -- choosing the client ---------------------------------------------------------------------------

@functools.cache
def _installed() -> bool:
    return importlib.util.find_spec("geventhttpclient") is not None  # not imported: it imports ssl


def use_geventhttpclient(wanted: str | None = None) -> bool:
    """Whether the next request goes over geventhttpclient (see the module docstring);
    ``wanted`` is ``settings().http_transport`` when the caller has it already."""
    wanted = wanted or settings().http_transport
    if wanted == "urllib3" or not available():
        return False
    if wanted == "geventhttpclient" and not _installed():
        raise ConfigError("http_transport='geventhttpclient' but geventhttpclient is not "
                          "installed: pip install 'greenagents[fast]', or use 'auto'")
    return _installed()


# -- proxies ---------------------------------------------------------------------------------------

def proxy_for(scheme: str, host: str, port: int) -> str | None:
    """The proxy URL the environment names for ``scheme://host:port``, or None (none set, or
    ``NO_PROXY`` covers the host).

    >>> import os
    >>> os.environ["HTTP_PROXY"], os.environ["NO_PROXY"] = "http://proxy:3128", "localhost"
    >>> proxy_for("http", "api.example", 80), proxy_for("http", "localhost", 8000)
    ('http://proxy:3128', None)
    >>> del os.environ["HTTP_PROXY"], os.environ["NO_PROXY"]
    """
    from urllib.request import (  # type: ignore[attr-defined]  # public, but not in typeshed
        getproxies_environment,
        proxy_bypass_environment,
    )

    proxies = getproxies_environment()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or proxy_bypass_environment(f"{host}:{port}", proxies):
        return None
    return url if "://" in url else f"http://{url}"


def urllib3_pool(scheme: str, host: str, port: int, size: int) -> HTTPConnectionPool:
    """A urllib3 pool for one origin (through the environment's proxy, if any): never blocking,
    never retrying (the retry layer owns that)."""
    import urllib3

    proxy = proxy_for(scheme, host, port)
    if proxy is None:
        pool_class = urllib3.HTTPSConnectionPool if scheme == "https" else urllib3.HTTPConnectionPool
        return pool_class(host, port, maxsize=size, block=False, retries=False)
    auth = urllib3.util.parse_url(proxy).auth
    manager = urllib3.ProxyManager(proxy, num_pools=1, maxsize=size, block=False, retries=False,
                                   proxy_headers=urllib3.make_headers(proxy_basic_auth=auth)
                                   if auth else None)
    return manager.connection_from_host(host, port, scheme)


# -- the geventhttpclient pool ---------------------------------------------------------------------

def _tls_context(**_ignored: Any) -> ssl.SSLContext:
    """The system's trust store, read when the pool is built (``SSL_CERT_FILE``/``SSL_CERT_DIR``
    honoured), as urllib3 does; geventhttpclient's own default is a CA file fixed at import."""
    import ssl

    return ssl.create_default_context()


def _idle_and_open(sock: Any) -> bool:
    """Whether a kept-alive socket can carry another request: open, and nothing (no EOF) to read.

    Replaces geventhttpclient's check, which calls ``select()``: that fails for any file
    descriptor past 1023, so beyond ~1,000 connections it judged every reused socket dead and
    opened a new one (measured: 487 of 1,000 kept-alive connections replaced on a second wave).
    A zero-timeout ``poll()`` (the real one: gevent's would yield) has no such limit.
    """
    import select

    try:
        fileno = sock.fileno()
        if fileno < 0:
            return False
        poller = os_poll()
        poller.register(fileno, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class _CachedLookup:
    """A pool's DNS lookup, remembered for :data:`DNS_TTL` seconds and made once for all the
    connections that open at the same moment.

    geventhttpclient resolves the host for every new connection, through gevent's thread pool:
    10,000 calls at once were 10,000 lookups queued on ~10 threads, each parked call holding
    ~4.6 KB meanwhile (tracemalloc). aiohttp caches lookups the same way (``ttl_dns_cache=10``).
    A failed lookup is not remembered.
    """

    def __init__(self, lookup: Any) -> None:
        from gevent.lock import Semaphore

        self._lookup = lookup
        self._lock = Semaphore()
        self._until = 0.0
        self._answer: Any = None

    def __call__(self) -> Any:
        if time.monotonic() < self._until:
            return self._answer
        with self._lock:  # one lookup; the others wait for it
            if time.monotonic() >= self._until:
                self._answer = self._lookup()
                self._until = time.monotonic() + DNS_TTL
        return self._answer


class _Body:
    """The body of a geventhttpclient response as the file object ``urllib3.HTTPResponse``
    decodes (gzip, deflate, br, zstd) and bounds."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self.closed = False

    def read(self, amt: int | None = None) -> bytes:
        return bytes(self._response.read(amt))

    read1 = read

    def isclosed(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
        self._response.release()  # unfinished: the connection is closed, not reused


class _Whole:
    """A plain answer of known length: what :func:`greenagents.http.request` reads at once (its
    fast path) or, past the size cap, piece by piece — the part of urllib3's response it uses.
    ``headers`` is a dict whose names are lower case already: the request takes it as it is."""

    def __init__(self, response: Any, status: int, headers: dict[str, str], length: int):
        self._response = response
        self.status = status
        self.headers = headers
        self.length_remaining = length

    def read(self, amt: int | None = None) -> bytes:
        # a body cut short raises geventhttpclient's HTTPParseError("Incomplete response.")
        return bytes(self._response.read(amt))

    read1 = read

    def close(self) -> None:
        self._response.release()

    def release_conn(self) -> None:
        self._response.release()  # finished: back to the pool; unfinished: closed


class GeventPool:
    """Kept-alive geventhttpclient connections to one origin, used like a urllib3 pool by
    :func:`greenagents.http.request` (``urlopen`` returns an object with urllib3's response
    interface: ``status``, ``headers``, ``length_remaining``, ``read``, ``read1``, ``close``,
    ``release_conn``)."""

    def __init__(self, scheme: str, host: str, port: int, size: int, connect_timeout: float):
        from geventhttpclient import HTTPClient
        from geventhttpclient.response import HTTPSocketPoolResponse

        tls = scheme == "https"
        proxy = proxy_for(scheme, host, port)
        via: dict[str, Any] = {}
        if proxy is not None:
            from urllib.parse import unquote, urlsplit

            parts = urlsplit(proxy)
            via = {"proxy_host": parts.hostname, "proxy_port": parts.port or 80,
                   "proxy_user": unquote(parts.username) if parts.username else None,
                   "proxy_password": unquote(parts.password) if parts.password else None}
        self.size = size
        self.connect_timeout = connect_timeout
        # no socket timeout once connected: the attempt's gevent.Timeout bounds the whole request.
        # None, not a large number: gevent arms a timer of its own around every wait of a socket
        # that has a timeout (measured: ~30 µs of CPU per call, 2,000 calls 50 wide)
        self._client = HTTPClient(host, port, ssl=tls, concurrency=size, headers={},
                                  connection_timeout=connect_timeout,
                                  network_timeout=None,  # type: ignore[arg-type]  # socket.settimeout(None)
                                  ssl_context_factory=_tls_context if tls else None,
                                  block_size=64 * 1024, **via)
        client = self._client
        self._agent: tuple[str, str] = next(iter(client.default_headers.items()))  # User-Agent
        bare = ":" in host and host[0] != "[" and host[-1] != "]"  # an IPv6 address: bracketed
        self._host = f"[{host}]" if bare else host  # in Host, as the library writes it
        if port not in (80, 443):
            self._host += f":{port}"
        credentials = client._proxy_credentials
        self._proxy_auth = None if credentials is None or tls else \
            "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        self._heads: dict[tuple[Any, ...], bytes] = {}  # see _head
        self._answer, self._block = HTTPSocketPoolResponse, client.block_size
        self._pool = pool = client._connection_pool
        pool._is_socket_alive = _idle_and_open  # type: ignore[method-assign]  # see its docstring
        pool._resolve = _CachedLookup(pool._resolve)  # type: ignore[method-assign]

    def urlopen(self, method: str, path: str, *, body: bytes | None,
                headers: Mapping[str, str]) -> BaseHTTPResponse | _Whole:
        sock, response = self._send(method, path, body, headers)
        if response is None:  # its headers read here: one frame less under every wait for them
            response = self._answer(sock, self._pool, block_size=self._block, method=method)
        # lower-cased once, here (three passes over the names were ~7 µs a call)
        found = {key.lower(): value for key, value in response.items()}
        status = int(response.status_code)
        length = response.content_length
        if length is not None and "content-encoding" not in found:
            return _Whole(response, status, found, length)
        import urllib3

        # encoded or of unknown length: urllib3 decodes it; the parser already de-chunked it
        found.pop("transfer-encoding", None)
        reader: Any = _Body(response)
        return urllib3.HTTPResponse(reader, headers=found, status=status, preload_content=False,
                                    decode_content=True)

    def stream(self, method: str, path: str, *, body: bytes, headers: Mapping[str, str],
               timeout: float) -> Any:
        """Send a request whose answer is read as it arrives; return once its headers are in
        (the caller bounds that wait), ``timeout`` then bounding each wait for data. The result
        has urllib3's streamed-response interface; an encoded answer is decoded by
        ``urllib3.HTTPResponse``, so the size cap counts decoded bytes as over urllib3."""
        sock, response = self._send(method, path, body, headers)
        if response is None:  # the headers kept as the lines they came in (see HeaderLines)
            response = self._answer(sock, self._pool, block_size=self._block, method=method,
                                    headers_type=HeaderLines)
        streamed = StreamedAnswer(response, timeout)
        if "content-encoding" not in streamed.headers:
            return streamed
        import urllib3

        return urllib3.HTTPResponse(streamed, headers={  # type: ignore[arg-type]
            key: value for key, value in streamed.headers.items()
            if key.lower() != "transfer-encoding"},
            status=streamed.status, preload_content=False, decode_content=True,
            connection=streamed)  # type: ignore[arg-type]  # what ByteStream reads: .sock

    def _send(self, method: str, path: str, body: bytes | None,
              headers: Mapping[str, str]) -> tuple[Any, Any]:
        """Send one request as geventhttpclient's ``request`` does, written directly over its pool
        for a POST (what the providers send): ``(the socket it went out on, None)``, the caller
        then reading the answer's headers (``HTTPSocketPoolResponse``); or ``(None, the
        answer)`` when the library's own path sent it.

        The library's own path merges the headers into its ``Headers`` four times and checks
        them twice (~30 µs a request, timeit); this writes the same head (:meth:`_head`). The
        rest is the library's: its pool (proxy tunnel, TLS, a kept-alive connection that died
        while idle replaced: :func:`_idle_and_open`), its response parser, and, as in its
        ``request``, a POST sent once — a connection broken while sending still gives the
        answer the server wrote before closing (a 413, say), else raises.
        """
        head = self._head(path, body, headers) if method == "POST" and body is not None else None
        if head is None:  # the library's own path (it re-sends an idempotent request once on a
            return None, self._client.request(method, path, body=body, headers=headers)  # dead one)
        pool = self._pool
        sock = pool.get_socket()
        try:
            sock.sendall(head + body if body else head)
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                pool.release_socket(sock)
                raise
        return sock, None

    def _head(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes | None:
        """The request line and headers ``HTTPClient._build_request`` writes for a POST of
        ``body`` (the same lines, order and checks), or None for what needs the library's own
        path: ``Expect: 100-continue``, ``Transfer-Encoding``, or a target or header it refuses
        (it raises its ``ValueError``). All but the length is remembered per path and headers
        (an endpoint's requests differ only in their bodies)."""
        key = (path, *headers.items())
        start = self._heads.get(key)
        if start is None:
            if len(self._heads) >= 64:  # a few endpoints: never reached but for misuse
                self._heads.clear()
            start = self._heads[key] = self._start(path, headers)
        if not start:
            return None
        return start + b"%d\r\n\r\n" % len(body) if start.endswith(b": ") else start

    def _start(self, path: str, headers: Mapping[str, str]) -> bytes:
        """:meth:`_head` but for the length: the head up to ``Content-Length: `` (or whole when
        the headers give the length), empty when the library's own path is needed."""
        client = self._client
        fields = {"user-agent": self._agent}
        for name, value in headers.items():
            fields[name.lower()] = (name, value)
        if "expect" in fields or "transfer-encoding" in fields:
            return b""
        if "host" not in fields:
            fields["host"] = ("Host", self._host)
        if self._proxy_auth is not None and "proxy-authorization" not in fields:
            fields["proxy-authorization"] = ("Proxy-Authorization", self._proxy_auth)
        if not path.startswith("/") or path.startswith("//") or not _TARGET.fullmatch(path):
            return b""
        if client.use_proxy and not client.ssl:
            path = client._base_url_string[:-1] + path  # a plain-HTTP proxy forwards it
        lines = [f"POST {path} {client.version}"]
        for name, value in fields.values():
            if not _TOKEN.fullmatch(name) or not isinstance(value, str) \
                    or not _VALUE.fullmatch(value):
                return b""
            lines.append(f"{name}: {value}")
        # the length last, as the library adds it: the one line that changes between requests
        lines.append("\r\n" if "content-length" in fields else "Content-Length: ")
        return "\r\n".join(lines).encode("latin-1")

    def close(self) -> None:
        self._client.close()


class GeventPools:
    """One client's geventhttpclient pools (a part of its :class:`~greenagents.state.State`,
    beside :class:`greenagents.http.Pools`): origin -> pool. :meth:`close` closes them all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_origin: dict[tuple[str, str, int], GeventPool] = {}

    def close(self) -> None:
        with self.lock:
            pools = list(self.by_origin.values())
            self.by_origin.clear()
        for pool in pools:
            pool.close()


def gevent_pool(key: tuple[str, str, int], size: int, connect_timeout: float) -> GeventPool:
    """The current client's :class:`GeventPool` of origin ``key`` (scheme, host, port), rebuilt
    when it is smaller than ``size`` or built for another ``connect_timeout``."""
    pools = state.current().part(GeventPools)
    pool = pools.by_origin.get(key)
    if pool is not None and pool.size >= size and pool.connect_timeout == connect_timeout:
        return pool
    with pools.lock:
        pool = pools.by_origin.get(key)
        if pool is None or pool.size < size or pool.connect_timeout != connect_timeout:
            old, pool = pool, GeventPool(*key, max(size, pool.size if pool else 0),
                                         connect_timeout)
            pools.by_origin[key] = pool
            if old is not None:
                old.close()
    return pool


# -- what went wrong -------------------------------------------------------------------------------

def failure_kind(exc: BaseException) -> str | None:
    """What a geventhttpclient exception means, in :func:`greenagents.http`'s words: ``"resolve"``,
    ``"connect"``, ``"connect_timeout"``, ``"tls"``, ``"broken"``, or None (not a transport
    failure).

    >>> failure_kind(ConnectionRefusedError(111, "Connection refused"))
    'connect'
    >>> failure_kind(ValueError("a bug")) is None
    True
    """
    import ssl
    from http.client import HTTPException

    if isinstance(exc, socket.gaierror):
        return "resolve"
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return "tls"
    if isinstance(exc, TimeoutError):  # only connect has a socket timeout (connection_timeout)
        return "connect_timeout"
    if isinstance(exc, OSError) and exc.errno in _CONNECT_ERRNOS:
        return "connect"
    if isinstance(exc, (OSError, HTTPException)):
        return "broken"  # reset, broken pipe, a malformed or cut-short answer
    return None

