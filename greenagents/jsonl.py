"""Crash-safe JSON Lines: encode any value, append whole lines, read a file back after a crash.

A run that is killed at any moment must leave an output a later ``--resume`` can trust. Two rules
make that so: every line reaches the file in one ``os.write`` on an ``O_APPEND`` descriptor (no
buffer can hold half a line at the moment of a SIGKILL, and the kernel never interleaves two
appends), and :func:`repair` drops a torn last line — the only place a crash can leave one.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
>>> with Appender(path) as out:
...     out.write({"index": 0, "ok": True})
>>> with open(path, "ab") as f:
...     _ = f.write(b'{"index": 1, "ok"')       # a crash mid-line
>>> list(repair(path))
[{'index': 0, 'ok': True}]
>>> open(path).read()
'{"index":0,"ok":true}\\n'
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import os
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Any

from pydantic import BaseModel

__all__ = ["Appender", "dumps", "encode", "jsonable", "read_objects", "repair"]


def jsonable(value: Any) -> Any:
    """The JSON form of what :func:`json.dumps` cannot encode itself (its ``default=`` hook).

    Pydantic models dump in JSON mode, dataclasses become objects, sets and tuples lists, enums
    their value, dates ISO strings; anything else its ``str()`` — a row is never lost to its value.

    >>> json.dumps({"at": datetime.date(2024, 5, 1), "tags": {"a"}}, default=jsonable)
    '{"at": "2024-05-01", "tags": ["a"]}'
    """
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def dumps(value: Any) -> str:
    """``value`` as compact one-line, standard JSON, whatever it holds (see :func:`jsonable`).

    NaN and ±infinity, which standard JSON cannot say, are written as ``null``. A lone surrogate
    (legal in a JSON string, not encodable as UTF-8) stays in the text; :func:`encode` writes it
    as its JSON escape.

    >>> dumps({"a": (1, 2), "score": float("nan")})
    '{"a":[1,2],"score":null}'
    """
    try:
        return json.dumps(value, default=jsonable, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere: the rare slow path
        finite = _finite(json.loads(json.dumps(value, default=jsonable)))
        return json.dumps(finite, ensure_ascii=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def encode(text: str) -> bytes:
    r"""``text`` as UTF-8, a lone surrogate written as its escape (``\ud83d``) instead of failing.

    Inside a JSON string that escape is JSON's own, so the value reads back unchanged.

    >>> half = chr(0xD83D)  # half an emoji: legal JSON, not encodable as UTF-8
    >>> encode(dumps({"emoji": half}))
    b'{"emoji":"\\ud83d"}'
    >>> json.loads(_) == {"emoji": half}
    True
    """
    return text.encode("utf-8", "backslashreplace")


class Appender:
    """Appends one JSON object per line to a file (or ``-``: stdout), each in one ``os.write``.

    Nothing is buffered in Python, so a line is either in the file whole or (if the process died
    inside the system call) torn at the very end, where :func:`repair` finds it.
    """

    def __init__(self, path: str, *, exclusive: bool = False):
        self.path = path
        if path == "-":
            self.fd, self._owned = 1, False
        else:
            self.fd, self._owned = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), True
            if exclusive:
                self._lock()

    def _lock(self) -> None:
        """Hold an exclusive ``flock`` on the file while it is open, or raise ``BlockingIOError``.

        Two writers appending to one output would duplicate every row. The kernel drops the lock
        when the descriptor closes, however the process ends (SIGKILL included).
        """
        import fcntl  # POSIX; imported here so the module still imports elsewhere

        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise

    def write(self, obj: Any) -> None:
        """Write ``obj`` as one line. A pipe may take it in pieces; the loop sends the rest."""
        data = memoryview(encode(dumps(obj) + "\n"))
        while data:
            data = data[os.write(self.fd, data):]

    def close(self) -> None:
        if self._owned:
            os.close(self.fd)
            self._owned = False

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def repair(path: str) -> Iterator[Any]:
    """Cut a torn last line off a JSON Lines file written by :class:`Appender`, then its objects.

    A last line without its newline, or one that is not valid JSON, is what a crash leaves: the
    file is truncated to the end of the line before it *now*, before this returns, so appending
    can continue on a clean line however much of the iterator is read. The objects are then read
    lazily; an invalid line before the last one was not written by a crash and raises
    ``ValueError`` naming it. A missing file reads as empty.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return iter(())
    start = _last_line_start(path, size)
    with open(path, "rb") as handle:
        handle.seek(start)
        last = handle.read()
    if last and not _complete(last):
        os.truncate(path, start)
    return _objects(path)


def _last_line_start(path: str, size: int, block: int = 1 << 16) -> int:
    """The offset where the file's last line starts (after the newline before it), reading back."""
    with open(path, "rb") as handle:
        end = size - 1  # a newline as the very last byte ends the last line; it does not start one
        while end > 0:
            begin = max(0, end - block)
            handle.seek(begin)
            found = handle.read(end - begin).rfind(b"\n")
            if found >= 0:
                return begin + found + 1
            end = begin
    return 0


def _complete(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        json.loads(line) if line.strip() else None
    except ValueError:
        return False
    return True


def _objects(path: str) -> Iterator[Any]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline")
                obj = json.loads(line) if line.strip() else None
            except ValueError:
                raise ValueError(f"{path}, line {number}: not valid JSON (and not a torn "
                                 "last line); fix or remove that line") from None
            if obj is not None:
                yield obj


def read_objects(lines: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """``(line_index, object)`` for each non-blank line, lazily; a bad line yields its ``ValueError``.

    The index is the 0-based line number, so it stays the same when a run is resumed and blank
    lines are skipped. An object that is not a JSON object is an error too (inputs are keyword
    arguments).

    >>> import io
    >>> list(read_objects(io.BytesIO(b'{"text": "hi"}\\n\\n[1]\\n')))
    [(0, {'text': 'hi'}), (2, ValueError('line 3: expected a JSON object of keyword arguments, got list'))]
    """
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            yield index, ValueError(f"line {index + 1}: invalid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            yield index, ValueError(f"line {index + 1}: expected a JSON object of keyword "
                                    f"arguments, got {type(obj).__name__}")
            continue
        yield index, obj
