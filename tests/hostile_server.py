"""A hostile HTTP server on raw sockets, run as its own process: ``python tests/hostile_server.py``.

It prints its port on one line, then answers every request by the first segment of its path
(so ``base_url="http://127.0.0.1:PORT/big"`` points an agent at ``/big``):

=================  ==========================================================================
``/gzip-bomb``     ~400 KB of gzip that inflates to 400 MB of JSON-ish zeros
``/deflate-bomb``  the same as ``deflate``; ``/zstd-bomb`` as ``zstd`` (when zstandard is here)
``/big``           an 80 MB JSON body with its Content-Length
``/endless``       a chunked body that never ends
``/drip``          headers at once, then the body one byte every 0.2 s, forever
``/drip-headers``  the status line and headers one byte every 0.2 s, forever
``/echo-auth``     401 whose error message echoes the Authorization header
``/answer/TEXT``   a 200 chat completion whose content is TEXT, URL-decoded (JSON escapes as sent)
=================  ==========================================================================

A process of its own, so the client's memory measurements count the client alone.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import zlib
from urllib.parse import unquote, urlsplit

BOMB_SIZE = 400 * 1024 * 1024
BIG_SIZE = 80 * 1024 * 1024
_bombs: dict[str, bytes] = {}
_bombs_lock = threading.Lock()


def _compressed(encoding: str) -> bytes:
    with _bombs_lock:
        if encoding not in _bombs:
            piece = b"0" * (1 << 20)
            if encoding == "zstd":
                import zstandard

                packer = zstandard.ZstdCompressor().compressobj()
                parts = [packer.compress(piece) for _ in range(BOMB_SIZE >> 20)]
                _bombs[encoding] = b"".join(parts) + packer.flush()
            else:
                packer = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
                parts = [packer.compress(piece) for _ in range(BOMB_SIZE >> 20)]
                _bombs[encoding] = b"".join(parts) + packer.flush()
        return _bombs[encoding]


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def _read_request(conn: socket.socket) -> tuple[str, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            raise ConnectionError("client left")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":")
                                                            for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += conn.recv(65536)
    return lines[0].split(" ")[1], headers


def _serve(conn: socket.socket) -> None:
    with conn:
        while True:
            target, headers = _read_request(conn)
            parts = urlsplit(target)
            path = "/" + parts.path.strip("/").split("/")[0]  # /big/chat/completions: /big
            if path.endswith("-bomb"):
                encoding = path[1:-len("-bomb")]
                body = _compressed(encoding)
                conn.sendall(_head("200 OK", {"Content-Type": "application/json",
                                              "Content-Encoding": encoding,
                                              "Content-Length": str(len(body))}) + body)
            elif path == "/big":
                conn.sendall(_head("200 OK", {"Content-Type": "application/json",
                                              "Content-Length": str(BIG_SIZE)}))
                conn.sendall(b'{"pad": "')
                piece = b"x" * (1 << 20)
                left = BIG_SIZE - len(b'{"pad": "') - 2
                while left > 0:
                    conn.sendall(piece[:left])
                    left -= len(piece)
                conn.sendall(b'"}')
            elif path == "/endless":
                conn.sendall(_head("200 OK", {"Content-Type": "application/json",
                                              "Transfer-Encoding": "chunked"}))
                chunk = b"%x\r\n%s\r\n" % (1 << 16, b"x" * (1 << 16))
                while True:
                    conn.sendall(chunk)
            elif path == "/drip":
                conn.sendall(_head("200 OK", {"Content-Type": "application/json",
                                              "Content-Length": "1000000"}))
                while True:
                    conn.sendall(b" ")
                    time.sleep(0.2)
            elif path == "/drip-headers":
                for byte in _head("200 OK", {"X-Slow": "x" * 100000}):
                    conn.sendall(bytes([byte]))
                    time.sleep(0.2)
            elif path == "/echo-auth":
                said = headers.get("authorization", "")
                body = ('{"error": {"message": "bad credentials: ' + said + '"}}').encode()
                conn.sendall(_head("401 Unauthorized", {"Content-Type": "application/json",
                                                        "Content-Length": str(len(body))}) + body)
            elif path == "/answer":
                text = unquote(parts.path.split("/")[2])
                body = ('{"model": "m", "choices": [{"message": {"role": "assistant", '
                        '"content": "' + text + '"}, "finish_reason": "stop"}], "usage": '
                        '{"prompt_tokens": 1, "completion_tokens": 1}}').encode()
                conn.sendall(_head("200 OK", {"Content-Type": "application/json",
                                              "Content-Length": str(len(body))}) + body)
            else:
                conn.sendall(_head("404 Not Found", {"Content-Length": "0"}))


def _guarded(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the client hung up: that is how most answers end here
        _serve(conn)


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_guarded, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
