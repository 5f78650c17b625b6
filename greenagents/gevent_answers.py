"""A geventhttpclient answer read as it arrives.

:meth:`greenagents.transport.GeventPool.stream` returns a :class:`StreamedAnswer`: the part of
urllib3's streamed-response interface that :class:`greenagents.http_stream.ByteStream` reads, at
the least CPU per streamed token this library can spend (each token of a paced answer is a
socket read of its own). Kept apart from :mod:`greenagents.transport` (which picks the client
and owns the pools) because its reads reach into geventhttpclient's parser and gevent's socket.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from greenlet import getcurrent

__all__ = ["HeaderLines", "StreamedAnswer"]


@functools.cache
def _plain_socket() -> Any:
    """gevent's socket class: a TLS socket is a subclass, read through its own ``recv``."""
    from gevent.socket import socket as plain

    return plain



class HeaderLines:
    """Response headers as urllib3's ``headers`` is used here (``items()``, ``get()``, ``in``),
    and as a streamed answer's parser stores them (its ``headers_type``: ``add``, ``clear``): the
    lines as they came, where the library's case-insensitive ``Headers`` spent ~1.5 µs a line
    on an index no one here reads."""

    def __init__(self, pairs: list[tuple[str, str]] | None = None) -> None:
        self._pairs = [] if pairs is None else pairs

    def add(self, name: str, value: str) -> None:
        self._pairs.append((name, value))

    def clear(self) -> None:
        self._pairs.clear()

    def items(self) -> list[tuple[str, str]]:
        return self._pairs

    def __contains__(self, name: object) -> bool:
        return any(key.lower() == name for key, _ in self._pairs)

    def get(self, name: str, default: str | None = None) -> str | None:
        return next((value for key, value in self._pairs if key.lower() == name), default)


class StreamedAnswer:
    """A geventhttpclient answer read as it arrives: the part of urllib3's streamed response that
    :class:`greenagents.http_stream.ByteStream` uses (``status``, ``headers``, ``chunked``,
    ``read1``, ``read``, ``connection.sock``, ``close``, ``release_conn``).

    * ``read1`` gives what one socket read brings (the C parser de-chunks it): the library's
      ``read(n)`` waits for ``n`` bytes, which would hold a stream's deltas back.
    * Each wait for data is bounded by ``timeout`` and by ``deadline`` (``time.monotonic()``; set by
      the stream's time limits) without a ``gevent.Timeout`` per wait: the socket keeps the pool's
      timeout (none), and one timer per answer, re-armed only when it rings early, throws
      ``TimeoutError`` into the reader if it is still waiting past its limit. So the next request
      on the kept-alive connection never inherits a stream's limit either.
    * A plain socket is read as "wait until readable, then one ``recv``": streamed tokens come
      one per read, most reads would find nothing yet, and gevent's ``recv`` tries first (a
      failed call and an exception per token); only after a read that filled the buffer (more
      is queued) does it try first. TLS sockets keep gevent's ``recv`` (decrypted bytes can be
      buffered where no readiness shows them). These two, with the parsing's fast paths, took
      a streamed token from ~44-52 µs to ~30-33 µs of client CPU at 50 tokens/s (see
      :class:`greenagents.providers.streams.TextStream`).
    * The connection returns to the pool the moment the parser sees the answer's end (the
      library does that); an answer abandoned before it is closed (``close``).
    """

    chunked = False  # de-chunked by the parser already

    def __init__(self, response: Any, timeout: float) -> None:
        self._response = response
        self.status = int(response.status_code)
        self.headers: HeaderLines = response._headers_index  # read into one (see _send)
        self.connection = self
        self.sock = response._sock  # None when the answer came whole with its headers
        self.timeout = timeout  # each wait for data (see _recv)...
        self.deadline: float | None = None  # ...and all of them (the stream's time limits)

    @property
    def closed(self) -> bool:
        return self.sock is None and not self._response._body_buffer

    def isclosed(self) -> bool:
        return self.closed

    def read1(self, amt: int = -1) -> bytes:
        """What the parser has, else what one read of the socket brings; b"" at the end."""
        response = self._response
        buffer: bytearray = response._body_buffer
        while not buffer and self.sock is not None:
            try:
                data = self._recv(response.block_size)
                (self._parse or self._parser())(data)  # cut short: HTTPParseError at the EOF
                if not data and not response.message_complete:
                    from geventhttpclient.response import HTTPConnectionClosed

                    raise HTTPConnectionClosed("the connection closed before the answer's end")
            except BaseException:
                self.close()  # unfinished: closed, not reused
                raise
            if response.message_complete:  # the library gave the connection back already
                self._stop_alarm()
                self.sock = None
        data = bytes(buffer)
        del buffer[:]
        return data

    _parse: Any = None

    def _parser(self) -> Any:
        """The response's C parser's ``feed``, its body callback a C method too (made at the
        first read): geventhttpclient's ``HTTPResponse.feed`` (a Python wrapper for answers to
        HEAD) and ``_on_body`` (a Python method extending the same buffer) cost ~0.85 µs a read
        between them (measured: 2.0 against 1.1 µs to de-chunk a 280-byte event)."""
        from geventhttpclient._parser import HTTPResponseParser

        response = self._response
        response._on_body = response._body_buffer.extend  # looked up on the instance per call
        self._parse = functools.partial(HTTPResponseParser.feed, response)
        return self._parse

    # the read-side state: the greenlet waiting in _recv (if any) and when its wait must end; the
    # answer's timer (a gevent loop watcher) while armed, and when it rings; whether the last read
    # filled the buffer (then more is likely queued: read at once, without waiting first)
    _reader: Any = None
    _expiry = 0.0
    _alarm: Any = None
    _alarm_at = float("inf")
    _full = False

    def _recv(self, size: int) -> bytes:
        """One read of the socket, its wait bounded by ``timeout`` and ``deadline``."""
        now = time.monotonic()
        expiry = now + self.timeout
        if self.deadline is not None and self.deadline < expiry:
            expiry = self.deadline
        if expiry <= now:
            raise TimeoutError("timed out")
        self._expiry = expiry
        if self._alarm_at > expiry:  # none armed, or armed too late (an earlier deadline)
            self._arm(expiry - now)
        sock: Any = self.sock
        self._reader = getcurrent()
        try:
            if type(sock) is not _plain_socket():
                return sock.recv(size)  # type: ignore[no-any-return]  # TLS: gevent's own
            raw = sock._sock
            if self._full:
                try:
                    data: bytes = raw.recv(size)
                except BlockingIOError:
                    pass
                else:
                    self._full = len(data) == size
                    return data
            hub, readable = sock.hub, sock._read_event
            while True:
                hub.wait(readable)
                try:
                    data = raw.recv(size)
                except BlockingIOError:  # woken with nothing to read after all: wait again
                    continue
                self._full = len(data) == size
                return data
        finally:
            self._reader = None

    def _arm(self, after: float) -> None:
        self._stop_alarm()
        self._alarm = alarm = self.sock.hub.loop.timer(max(after, 0.0))
        self._alarm_at = time.monotonic() + after
        alarm.start(self._rang, update=True)

    def _rang(self) -> None:
        """The timer rang (in the hub): time the waiting reader out, or re-arm for its limit."""
        self._stop_alarm()
        reader = self._reader
        if reader is None:  # between reads: the next read arms it again
            return
        left = self._expiry - time.monotonic()
        if left > 0:  # it was armed for an earlier wait: re-armed for this one's limit
            self._arm(left)
        else:
            reader.throw(TimeoutError("timed out"))

    def _stop_alarm(self) -> None:
        alarm = self._alarm
        if alarm is not None:
            self._alarm, self._alarm_at = None, float("inf")
            alarm.stop()
            alarm.close()

    def read(self, amt: int | None = None) -> bytes:
        """Up to ``amt`` bytes (all when None): for an error's body, read whole."""
        parts, size = [], 0
        while amt is None or size < amt:
            chunk = self.read1()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:amt]

    def close(self) -> None:
        self._stop_alarm()
        self.sock = None
        self._response.release()  # finished: already back in the pool; unfinished: closed

    release_conn = close
