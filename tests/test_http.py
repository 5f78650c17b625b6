"""The shared transport against a real HTTP server on 127.0.0.1 (no mocks of urllib3)."""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import json
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from greenagents import config, http, http_stream
from greenagents.errors import (
    AuthError,
    BadRequest,
    ConnectionFailed,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)

SECRET = "sk-live-abcdef123456"

pytestmark = pytest.mark.usefixtures("http_transport")  # every test over urllib3 and geventhttpclient


class _Handler(BaseHTTPRequestHandler):
    """Behaviour by path: /status/<code>?header=value, /hang, /slow, /reset, /truncate, /sse/...
    (/sse/late/, /sse/paced/, /sse/stall/, /sse/gzip/), /bye, /reply, else echo."""

    protocol_version = "HTTP/1.1"  # keep-alive
    server: LocalServer

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.requests.append((self.path, dict(self.headers.items()), body))
        parts = urlsplit(self.path)
        if parts.path.startswith("/status/"):
            self._send(int(parts.path.rsplit("/", 1)[1]), dict(parse_qsl(parts.query)),
                       json.dumps({"error": {"message": "failed"}}).encode())
        elif parts.path == "/hang":
            time.sleep(5)
        elif parts.path == "/slow":  # the echo, after 0.6 s
            time.sleep(0.6)
            self._send(200, {}, body)
        elif parts.path == "/reset":  # SO_LINGER 0: close() sends RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif parts.path == "/gzip":  # the echo, compressed
            self._send(200, {"Content-Encoding": "gzip"}, gzip.compress(body))
        elif parts.path == "/chunked":  # the echo in two chunks, no Content-Length
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(body) // 2
            for piece in (body[:half], body[half:], b""):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        elif parts.path.startswith("/sse/"):  # ``reply``'s body as server-sent events, chunked
            data = self.server.reply[2] if self.server.reply else b""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            if parts.path.startswith("/sse/gzip/"):
                self.send_header("Content-Encoding", "gzip")
                data = gzip.compress(data)
            self.end_headers()
            if parts.path.startswith("/sse/late/"):  # the body 0.1 s after the headers
                self.wfile.flush()
                time.sleep(0.1)
            pieces = [data]
            if parts.path.startswith("/sse/paced/"):  # an event every 0.1 s, each its own chunk
                pieces = [event + b"\n\n" for event in data.split(b"\n\n") if event]
            for piece in pieces:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                if parts.path.startswith("/sse/paced/"):
                    time.sleep(0.1)
            if parts.path.startswith("/sse/stall/"):  # the body, then 1.5 s before its end
                time.sleep(1.5)
            self.wfile.write(b"0\r\n\r\n")
        elif parts.path == "/bye":  # the echo, then the connection closed without notice
            self._send(200, {}, body)
            self.close_connection = True
        elif parts.path == "/user-agent":
            self._send(200, {}, json.dumps(self.headers.get("user-agent")).encode())
        elif parts.path == "/truncate":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"choices": [')
            self.close_connection = True
        elif self.server.reply is not None:
            self._send(*self.server.reply)
        else:
            self._send(200, {}, body)

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LocalServer(ThreadingHTTPServer):
    """A test server on a free port of 127.0.0.1; ``reply`` fixes the answer of other paths."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.reply: tuple[int, dict[str, str], bytes] | None = None
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    yield from _serving(LocalServer())


def _serving(srv: LocalServer) -> Iterator[LocalServer]:
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    http.close_pools()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tls_server(tmp_path: Any) -> Iterator[tuple[LocalServer, str]]:
    """The same server over TLS, its certificate for 127.0.0.1 signed by a test CA (trustme);
    yields the server (``url`` is https) and the CA's PEM file."""
    trustme = pytest.importorskip("trustme")
    import ssl

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    srv = LocalServer()
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    srv.url = srv.url.replace("http://", "https://")
    ca = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    yield from ((srv, str(ca)) for srv in _serving(srv))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- status mapping ----------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "error"), [
    (400, BadRequest), (401, AuthError), (403, AuthError), (404, BadRequest), (408, Timeout),
    (409, ServerError), (422, BadRequest), (429, RateLimited), (500, ServerError),
    (503, ServerError), (529, ServerError),
])
def test_status_maps_to_error(server: LocalServer, status: int, error: type[ProviderError]) -> None:
    response = http.post_json(f"{server.url}/status/{status}", {}, {})
    assert response.status == status
    with pytest.raises(ProviderError) as info:
        http.raise_for_status(response, provider="openai", message=f"bad key {SECRET}",
                              key_env="OPENAI_API_KEY", api_key=SECRET)
    assert type(info.value) is error
    assert (info.value.status, info.value.provider) == (status, "openai")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert info.value.retryable == (error in (Timeout, ServerError, RateLimited))


def test_2xx_does_not_raise_and_headers_are_case_insensitive(server: LocalServer) -> None:
    response = http.post_json(f"{server.url}/echo", {"a": [1, "é"]}, {})
    http.raise_for_status(response, provider="openai")
    assert json.loads(response.data) == {"a": [1, "é"]}
    assert response.headers["CONTENT-TYPE"] == response.headers.get("content-type")


@pytest.mark.parametrize("path", ["/gzip", "/chunked"])
def test_gzip_and_chunked_answers_are_decoded(server: LocalServer, path: str) -> None:
    body = {"text": "é" * 3000, "n": list(range(200))}
    assert json.loads(http.post_json(server.url + path, body, {}).data) == body


def test_the_chosen_client_sends_the_request(server: LocalServer, http_transport: str) -> None:
    agent = json.loads(http.post_json(f"{server.url}/user-agent", {}, {}).data)
    assert ("gevent-http-client" if http_transport == "geventhttpclient" else "urllib3") in agent


def test_tls_with_a_trusted_certificate(tls_server: tuple[LocalServer, str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The system trust store, read when a connection is made: SSL_CERT_FILE names our test CA."""
    srv, ca = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    response = http.post_json(f"{srv.url}/echo", {"over": "tls"}, {})
    assert json.loads(response.data) == {"over": "tls"}


def test_tls_with_an_unknown_certificate_is_refused(tls_server: tuple[LocalServer, str]) -> None:
    srv, _ = tls_server
    with pytest.raises(ConnectionFailed, match=r"TLS handshake with https://127\.0\.0\.1:\d+ failed"):
        http.post_json(f"{srv.url}/echo", {}, {}, provider="openai")


# -- proxies from the environment ----------------------------------------------------------------

@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the developer's shell; each test sets its own."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_http_proxy_from_the_environment(server: LocalServer, proxy_env: pytest.MonkeyPatch) -> None:
    """The local server plays the proxy: it gets the absolute URI of a host that does not exist."""
    proxy_env.setenv("HTTP_PROXY", server.url)
    response = http.post_json("http://api.proxied.invalid/v1/echo", {"via": "proxy"}, {})
    assert json.loads(response.data) == {"via": "proxy"}
    target = urlsplit(server.requests[-1][0])  # geventhttpclient also names port 80
    assert (target.hostname, target.port or 80, target.path) == ("api.proxied.invalid", 80, "/v1/echo")


def test_no_proxy_is_honoured(server: LocalServer, proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{_free_port()}")  # used, it would refuse
    proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert http.post_json(f"{server.url}/echo", {}, {}).status == 200


def _tunnel_proxy(seen: list[str]) -> socket.socket:
    """A CONNECT proxy on 127.0.0.1: records each CONNECT line, then relays bytes both ways."""
    listener = socket.create_server(("127.0.0.1", 0))

    def relay(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096)
            line = head.split(b"\r\n", 1)[0].decode()
            seen.append(line)
            host, port = line.split()[1].rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            for pair in ((client, upstream), (upstream, client)):
                threading.Thread(target=relay, args=pair, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_https_proxy_tunnels_with_connect(tls_server: tuple[LocalServer, str],
                                          proxy_env: pytest.MonkeyPatch) -> None:
    srv, ca = tls_server
    seen: list[str] = []
    listener = _tunnel_proxy(seen)
    proxy_env.setenv("SSL_CERT_FILE", ca)
    proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        response = http.post_json(f"{srv.url}/echo", {"via": "tunnel"}, {})
    finally:
        listener.close()
    assert json.loads(response.data) == {"via": "tunnel"}
    assert seen and seen[0].startswith(f"CONNECT 127.0.0.1:{srv.server_address[1]} ")


def test_auth_error_names_the_variable() -> None:
    with pytest.raises(AuthError, match="check ANTHROPIC_API_KEY"):
        http.raise_for_status(http.HttpResponse(401, {}, b""), provider="anthropic",
                              key_env="ANTHROPIC_API_KEY")


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_retry_after(server: LocalServer, headers: dict[str, str], expected: float | None) -> None:
    query = "&".join(f"{k}={v}" for k, v in headers.items())
    response = http.post_json(f"{server.url}/status/429?{query}", {}, {})
    with pytest.raises(RateLimited) as info:
        http.raise_for_status(response, provider="openai")
    assert info.value.retry_after == expected


def test_retry_after_http_date() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=10)
    response = http.HttpResponse(429, {"Retry-After": email.utils.format_datetime(when, True)}, b"")
    with pytest.raises(RateLimited) as info:
        http.raise_for_status(response, provider="openai")
    assert info.value.retry_after is not None and 8 <= info.value.retry_after <= 10.5


# -- transport failures ------------------------------------------------------------------------

def test_connection_refused() -> None:
    port = _free_port()
    with pytest.raises(ConnectionFailed) as info:
        http.post_json(f"http://127.0.0.1:{port}/v1/chat/completions", {},
                       {"authorization": f"Bearer {SECRET}"}, hint="check OPENAI_BASE_URL")
    text = str(info.value)
    assert f"http://127.0.0.1:{port}" in text and "connection refused" in text
    assert "check OPENAI_BASE_URL" in text and SECRET not in text


def test_reset_is_connection_failed(server: LocalServer) -> None:
    with pytest.raises(ConnectionFailed, match="broke mid-request"):
        http.post_json(f"{server.url}/reset", {}, {})


def test_truncated_body_is_connection_failed(server: LocalServer, http_transport: str) -> None:
    """Fewer bytes than Content-Length: the transport reports it (urllib3's IncompleteRead,
    geventhttpclient's "Incomplete response")."""
    cause = "IncompleteRead" if http_transport == "urllib3" else "Incomplete response"
    with pytest.raises(ConnectionFailed, match=f"broke mid-request .*{cause}"):
        http.post_json(f"{server.url}/truncate", {}, {})


def test_hang_is_timeout(server: LocalServer) -> None:
    start = time.monotonic()
    with pytest.raises(Timeout, match=r"within timeout=0\.3s"):
        http.post_json(f"{server.url}/hang", {}, {}, timeout=0.3)
    assert time.monotonic() - start < 2


def test_bad_url_is_bad_request() -> None:
    with pytest.raises(BadRequest, match="http:// or https://"):
        http.post_json("ftp://example.com/x", {}, {})


# -- pooling -----------------------------------------------------------------------------------

def test_keep_alive_reuses_one_connection(server: LocalServer) -> None:
    for i in range(20):
        assert http.post_json(f"{server.url}/echo", {"i": i}, {}).status == 200
    assert server.connections == 1


def test_one_pool_per_origin_sized_to_load(server: LocalServer) -> None:
    pool = http.pool_for(f"{server.url}/v1/a")
    assert http.pool_for(f"{server.url}/other") is pool
    assert http.pool_for(f"http://127.0.0.1:{_free_port()}/") is not pool
    assert pool.pool is not None and pool.pool.maxsize == http.MIN_AUTO_POOL_SIZE
    config.configure(max_concurrency=http.MIN_AUTO_POOL_SIZE + 1)
    bigger = http.pool_for(server.url)
    assert bigger is not pool and bigger.pool is not None
    assert bigger.pool.maxsize == http.MIN_AUTO_POOL_SIZE + 1
    config.configure(http_pool_size=8)
    assert http.pool_for(server.url) is bigger  # never shrunk under running calls


def test_gevent_pool_is_sized_to_load_and_grows(http_transport: str) -> None:
    if http_transport != "geventhttpclient":
        pytest.skip("geventhttpclient's pool; urllib3's is checked above")
    from greenagents import transport

    key = ("http", "127.0.0.1", _free_port())
    pool = transport.gevent_pool(key, http.MIN_AUTO_POOL_SIZE, 10.0)
    assert transport.gevent_pool(key, 8, 10.0) is pool  # never shrunk under running calls
    bigger = transport.gevent_pool(key, http.MIN_AUTO_POOL_SIZE + 1, 10.0)
    assert bigger is not pool and bigger.size == http.MIN_AUTO_POOL_SIZE + 1


_WIDE = """
    from gevent import monkey; monkey.patch_all()
    import json, logging, sys, time
    import gevent
    from gevent.pywsgi import WSGIServer
    from greenagents import config, http, http_stream

    n, pool_size = int(sys.argv[1]), (int(sys.argv[2]) or None)
    ports = set()

    def app(environ, start_response):
        ports.add(environ["REMOTE_PORT"])
        environ["wsgi.input"].read()
        gevent.sleep(0.05)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]

    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None, backlog=4096)
    server.start()
    config.configure(max_concurrency=n, http_pool_size=pool_size)
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("urllib3").addHandler(handler)
    url = f"http://127.0.0.1:{server.server_port}/v1/chat/completions"
    waves = []
    for _ in range(2):
        start, cpu = time.perf_counter(), time.process_time()
        jobs = [gevent.spawn(http.post_json, url, {"i": i}, {}) for i in range(n)]
        gevent.joinall(jobs, raise_error=True)
        assert all(job.value.status == 200 for job in jobs)
        waves.append({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                      "connections": len(ports)})
    print(json.dumps({"pool_full_warnings": len(warnings), "waves": waves}))
"""


def _run_wide(n: int, pool_size: int = 0) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_WIDE), str(n), str(pool_size)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_no_pool_full_warning_at_1000_concurrent() -> None:
    """1,000 concurrent calls (twice): no discarded connection, and the second wave reuses all."""
    result = _run_wide(1000)
    assert result["pool_full_warnings"] == 0, result
    first, second = result["waves"]
    assert first["connections"] <= 1000
    assert second["connections"] == first["connections"], "second wave opened new connections"


def test_small_pool_does_warn(http_transport: str) -> None:
    """The control: the measurement above does see discards when the pool is too small."""
    if http_transport != "urllib3":
        pytest.skip("urllib3's warning; geventhttpclient's pool never discards (it waits)")
    assert _run_wide(100, pool_size=10)["pool_full_warnings"] > 0


# -- streamed answers: the same transport behaviours ---------------------------------------------

def _streamed(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    with http_stream.open_stream(url, {"q": 1}, headers or {}, provider="openai") as answer:
        return answer.status, b"".join(answer.chunks())


def test_a_stream_goes_through_an_http_proxy(server: LocalServer,
                                             proxy_env: pytest.MonkeyPatch) -> None:
    server.reply = (200, {}, b"data: hi\n\n")
    proxy_env.setenv("HTTP_PROXY", server.url)
    assert _streamed("http://api.proxied.invalid/sse/v1/chat") == (200, b"data: hi\n\n")
    target = urlsplit(server.requests[-1][0])
    assert (target.hostname, target.port or 80, target.path) == ("api.proxied.invalid", 80,
                                                                 "/sse/v1/chat")


def test_a_stream_over_tls_through_a_connect_tunnel(tls_server: tuple[LocalServer, str],
                                                     proxy_env: pytest.MonkeyPatch) -> None:
    srv, ca = tls_server
    srv.reply = (200, {}, b"data: hi\n\n")
    seen: list[str] = []
    listener = _tunnel_proxy(seen)
    proxy_env.setenv("SSL_CERT_FILE", ca)
    proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        assert _streamed(f"{srv.url}/sse/v1") == (200, b"data: hi\n\n")
    finally:
        listener.close()
    assert seen and seen[0].startswith(f"CONNECT 127.0.0.1:{srv.server_address[1]} ")
    assert srv.requests[-1][0] == "/sse/v1"  # inside the tunnel: the path alone


def test_a_dead_kept_alive_connection_is_replaced(server: LocalServer) -> None:
    """The server closed the kept-alive connection after its answer, without saying so: the
    next request (a stream) goes over a new one, which is then kept."""
    server.reply = (200, {}, b"data: hi\n\n")
    assert http.post_json(f"{server.url}/bye", {}, {}).status == 200
    time.sleep(0.2)  # the server's close arrives
    for _ in range(3):
        assert _streamed(f"{server.url}/sse/v1") == (200, b"data: hi\n\n")
    assert server.connections == 2


def test_a_stream_reset_or_refused_is_connection_failed(server: LocalServer) -> None:
    with pytest.raises(ConnectionFailed, match="broke mid-request"):
        _streamed(f"{server.url}/reset")
    with pytest.raises(ConnectionFailed, match="connection refused"):
        _streamed(f"http://127.0.0.1:{_free_port()}/v1")


def test_a_header_that_would_add_a_line_is_refused(server: LocalServer) -> None:
    headers = {"x-note": "a\r\nX-Injected: 1"}
    with pytest.raises(ValueError):
        _streamed(f"{server.url}/sse/v1", headers)
    with pytest.raises(ValueError):
        http.post_json(f"{server.url}/echo", {}, headers)
    assert not server.requests


@pytest.mark.parametrize(("origin", "proxy", "headers"), [
    (("http", "127.0.0.1", 8000), None, {"content-type": "application/json",
                                         "authorization": "Bearer sk-x"}),
    (("https", "api.example", 443), None, {"User-Agent": "mine/1", "x-api-key": "k"}),
    (("http", "api.example", 80), "http://user:p%40ss@127.0.0.1:3128", {"accept": "*/*"}),
    (("https", "api.example", 8443), "http://user:pw@127.0.0.1:3128", {}),
    (("http", "::1", 8000), None, {"Host": "override", "Content-Length": "2"}),
])
def test_a_post_writes_the_head_geventhttpclient_writes(
        http_transport: str, proxy_env: pytest.MonkeyPatch, origin: tuple[str, str, int],
        proxy: str | None, headers: dict[str, str]) -> None:
    """Its request head is written directly over the library's pool (see GeventPool._send):
    the same bytes as the library's own request builder, proxies and overrides included."""
    if http_transport != "geventhttpclient":
        pytest.skip("geventhttpclient's request head")
    from greenagents import transport

    if proxy is not None:
        proxy_env.setenv(f"{origin[0].upper()}_PROXY", proxy)
    pool = transport.GeventPool(*origin, 10, 5.0)
    try:
        for path, body in (("/v1/chat/completions", b'{"q":1}'), ("/v1/x?y=1", b"")):
            expected = pool._client._build_request("POST", path, body=body, headers=headers)
            for _ in range(2):  # made, then remembered
                assert pool._head(path, body, headers) == expected.encode("latin-1")
    finally:
        pool.close()


# -- choosing the client, and the JSON codec ------------------------------------------------------

def test_forcing_a_missing_geventhttpclient_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from greenagents import transport
    from greenagents.errors import ConfigError

    monkeypatch.setattr(transport, "_installed", lambda: False)  # as if not installed
    config.configure(http_transport="geventhttpclient")
    with pytest.raises(ConfigError, match=r"greenagents\[fast\]"):
        http.post_json("http://127.0.0.1:9/v1", {}, {})
    config.configure(http_transport="auto")
    assert not transport.use_geventhttpclient()  # auto: urllib3 then


def test_an_unknown_client_is_refused() -> None:
    from greenagents.errors import ConfigError

    with pytest.raises(ConfigError, match="http_transport"):
        config.configure(http_transport="httpx")


@pytest.mark.parametrize("value", [
    {"text": "é\u2028", "n": [1, 2.5, None, True]},
    {"lone": "\ud83d"},            # a lone surrogate: before, post_json raised UnicodeEncodeError
    {"big": 2**70},                # past 64 bits: orjson refuses it
    {1: "int key"},                # orjson wants str keys; json turns it into "1"
])
def test_json_codec_falls_back_to_the_standard_library(value: dict[Any, Any]) -> None:
    from greenagents import transport

    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert transport.loads(transport.dumps(value)) == json.loads(expected)


def test_json_codec_reads_what_only_the_standard_library_reads() -> None:
    from greenagents import transport

    assert transport.loads(b'{"lone": "\\ud83d", "big": 1180591620717411303424}') == {
        "lone": "\ud83d", "big": 2**70}
    with pytest.raises(ValueError):
        transport.loads(b"<html>not json</html>")
