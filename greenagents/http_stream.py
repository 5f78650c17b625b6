"""A streamed HTTP answer: the body read as it arrives from the shared pool, never held whole.

:func:`open_stream` is :func:`greenagents.http.post_json` for answers that come a piece at a time
(server-sent events): same pools and transport (urllib3, or geventhttpclient where it carries the
process's other requests: :mod:`greenagents.transport`), headers, timeouts and error mapping, but
the body is not read ahead: the caller reads each chunk as the server sends it. What it guards
against:

* **Half-read connections.** A body read to its end goes back to the pool (kept alive); one
  abandoned midway (:meth:`ByteStream.close` with the stream unfinished: the caller stopped
  listening) is *closed*, so the server sees the hang-up and stops generating, and no later request
  reads the leftovers.
* **Deadlines between reads.** ``timeout`` bounds each wait for data, as for any request;
  :meth:`ByteStream.set_deadline` bounds the total too (the first token, the whole call): each read
  waits at most until then.
* **Unbounded bodies.** An error answer is read up to :data:`MAX_ERROR_BYTES`; events are bounded
  by the SSE parser.

>>> open_stream("http://127.0.0.1:9/v1/chat", {}, {}, provider="openai", hint="check X")
Traceback (most recent call last):
...
greenagents.errors.ConnectionFailed: openai: could not connect to http://127.0.0.1:9 \
(connection refused); is the server running? check X
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import gevent

from . import transport
from .config import settings
from .errors import ResponseTooLarge, Timeout
from .gevent_answers import StreamedAnswer
from .http import (
    Headers,
    HttpResponse,
    attempt_timeout,
    gevent_pool_for,
    pool_for,
    request_target,
    transport_error,
)

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

__all__ = ["MAX_ERROR_BYTES", "ByteStream", "open_stream"]

#: An error answer (or a non-streamed one) is read up to this many bytes (4 MiB).
MAX_ERROR_BYTES = 4 << 20
_READ = 1 << 16


class ByteStream:
    """One streamed answer: ``status``, ``headers``, then :meth:`chunks` as they arrive.

    Close it (or use it as a context manager) when done: a finished body returns its connection
    to the pool, an unfinished one closes it.
    """

    def __init__(self, raw: BaseHTTPResponse, url: str, provider: str | None,
                 timeout: float) -> None:
        self._raw = raw
        self._url, self._provider, self._timeout = url, provider, timeout
        self._deadline: float | None = None
        self._why = ""
        self.status = raw.status
        self.finished = False

    @functools.cached_property
    def headers(self) -> Headers:
        """The answer's headers, names lower-cased (made when first asked for: a stream that
        goes well never needs them)."""
        return Headers(self._raw.headers.items())

    @property
    def is_event_stream(self) -> bool:
        """Whether the server streams events (some compatible servers answer whole instead)."""
        kind = self._raw.headers.get("content-type") or ""  # urllib3's: any case
        return kind.startswith("text/event-stream")

    def whole(self) -> HttpResponse:
        """The body read whole (up to :data:`MAX_ERROR_BYTES`): for errors and unstreamed answers."""
        try:
            data = self._raw.read(MAX_ERROR_BYTES)
        except Exception as exc:
            raise self._mapped(exc) from exc
        finally:
            self.close()
        return HttpResponse(self.status, self.headers, data)

    def set_deadline(self, deadline: float | None, why: str = "") -> None:
        """Bound every later read by ``deadline`` (``time.monotonic()``; None: ``timeout`` only);
        ``why`` names the limit in the error (e.g. ``"first_token_timeout"``)."""
        self._deadline, self._why = deadline, why
        connection: Any = self._raw.connection
        if isinstance(connection, StreamedAnswer):  # it bounds its own waits: no per-read work
            connection.deadline = deadline

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as the server sends them; raises our errors, never urllib3's."""
        raw: Any = self._raw
        read: Callable[[int], bytes]
        if raw.chunked:  # urllib3 de-chunks; read_chunked's decode_content None means "do not
            # decode" (a gzip stream came through compressed, and the size cap counted those bytes)
            chunked = raw.read_chunked(_READ, decode_content=True)
            read = lambda _: next(chunked, b"")  # noqa: E731
        else:
            read = raw.read1
        # the socket's timeout is set per read by urllib3's connection; geventhttpclient's answer
        # bounds its own waits (see set_deadline)
        per_read = not isinstance(raw.connection, StreamedAnswer)
        cap, total = settings().max_response_bytes, 0  # the answer size cap applies to streams too
        try:
            while True:
                if per_read and self._deadline is not None:
                    self._bound_read()
                chunk = read(_READ)
                if not chunk:
                    self.finished = True
                    return
                total += len(chunk)
                if total > cap:
                    raise ResponseTooLarge(
                        f"{self._provider or 'the server'}: the streamed answer is larger than "
                        f"max_response_bytes={cap:,} bytes; raise it with "
                        "ga.configure(max_response_bytes=...)", provider=self._provider)
                yield chunk
        except Exception as exc:
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _bound_read(self) -> None:
        left = self._deadline - time.monotonic()  # type: ignore[operator]
        if left <= 0:
            raise self._late()
        connection = self._raw.connection
        sock = getattr(connection, "sock", None)
        if sock is not None:
            sock.settimeout(min(left, self._timeout))

    def _late(self) -> Timeout:
        return Timeout(f"{self._provider or 'the server'}: the stream's time limit "
                       f"({self._why or 'deadline'}) passed; raise it for long answers",
                       provider=self._provider)

    def _mapped(self, exc: Exception) -> Exception:
        from urllib3.exceptions import ReadTimeoutError

        if isinstance(exc, (TimeoutError, ReadTimeoutError)):  # a wait for data ran out
            if self._deadline is not None and time.monotonic() >= self._deadline - 0.01:
                return self._late()
            # named here, not by transport_error: over geventhttpclient a TimeoutError means a
            # connect timeout, over urllib3 the whole attempt's (a stream has no such limit)
            return Timeout(f"{self._provider or 'the server'}: the stream stalled (no data for "
                           f"timeout={self._timeout:g}s); retry, or raise the timeout",
                           provider=self._provider)
        mapped = transport_error(exc, self._url, self._provider, None, self._timeout)
        return exc if mapped is None else mapped

    def close(self) -> None:
        """Give the connection back when the body was read to its end; otherwise close it, so
        the server sees the hang-up. Safe to call twice."""
        raw = self._raw
        if self.finished:
            raw.release_conn()
        else:
            raw.close()
            raw.release_conn()

    def __enter__(self) -> ByteStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_stream(url: str, body: Mapping[str, Any], headers: Mapping[str, str], *,
                timeout: float | None = None, provider: str | None = None,
                hint: str | None = None) -> ByteStream:
    """POST ``body`` as JSON and return as soon as the answer's headers are in.

    Transport failures raise like :func:`greenagents.http.post_json`; any status is returned
    (read an error's body with :meth:`ByteStream.whole`).
    """
    current = settings()
    read_timeout = current.timeout if timeout is None else timeout
    payload = transport.dumps(body)
    send = {"content-type": "application/json", "accept": "text/event-stream", **headers}
    gevent_pool = gevent_pool_for(url, current)
    # geventhttpclient (only when patched): a gevent.Timeout bounds the wait for the headers
    timer = gevent.Timeout(read_timeout) if gevent_pool is not None else None
    try:
        if gevent_pool is not None and timer is not None:
            with timer:
                raw: Any = gevent_pool.stream("POST", request_target(None, url), body=payload,
                                              headers=send, timeout=read_timeout)
        else:
            import urllib3

            pool = pool_for(url)
            raw = pool.urlopen(
                "POST", request_target(pool, url), body=payload, headers=send,
                retries=_no_retries(), redirect=False, assert_same_host=False,
                preload_content=False, decode_content=True,
                timeout=urllib3.Timeout(connect=min(current.connect_timeout, read_timeout),
                                        read=read_timeout))
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise attempt_timeout(url, provider, read_timeout) from None
    except Exception as exc:
        mapped = transport_error(exc, url, provider, hint, read_timeout)
        if mapped is None:
            raise
        raise mapped from exc
    return ByteStream(raw, url, provider, read_timeout)


@functools.lru_cache(maxsize=1)
def _no_retries() -> Any:
    """``retries=False`` made once: given ``False``, urllib3 builds a ``Retry`` per request."""
    from urllib3.util import Retry

    return Retry(total=False, redirect=False)
