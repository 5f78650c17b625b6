"""jsonl.repair: a torn last line is cut at once, whatever part of the objects is then read."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenagents import jsonl


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_torn_tail_is_cut_before_any_object_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.jsonl", b'{"i":0}\n{"i":1}\n{"i":2, "ok"')
    objects = jsonl.repair(str(path))  # not iterated: the file is repaired already
    assert path.read_bytes() == b'{"i":0}\n{"i":1}\n'
    assert next(objects) == {"i": 0}  # read partly, nothing changes
    assert path.read_bytes() == b'{"i":0}\n{"i":1}\n'


@pytest.mark.parametrize("tail", [b'{"i":1}', b'{"i":\n', b"garbage\n"])
def test_a_last_line_without_newline_or_not_json_is_torn(tmp_path: Path, tail: bytes) -> None:
    path = _write(tmp_path / "out.jsonl", b'{"i":0}\n' + tail)
    assert list(jsonl.repair(str(path))) == [{"i": 0}]
    assert path.read_bytes() == b'{"i":0}\n'


def test_a_long_last_line_is_found_across_read_blocks(tmp_path: Path) -> None:
    long = b'{"text":"' + b"x" * 200_000 + b'"}\n'
    path = _write(tmp_path / "out.jsonl", b'{"i":0}\n' + long + b'{"i"')
    assert [len(o) for o in jsonl.repair(str(path))] == [1, 1]
    assert path.read_bytes() == b'{"i":0}\n' + long


def test_complete_files_blank_lines_and_missing_files_are_left_alone(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.jsonl", b'{"i":0}\n\n{"i":1}\n')
    assert list(jsonl.repair(str(path))) == [{"i": 0}, {"i": 1}]
    assert path.read_bytes() == b'{"i":0}\n\n{"i":1}\n'
    assert list(jsonl.repair(str(tmp_path / "missing.jsonl"))) == []
    empty = _write(tmp_path / "empty.jsonl", b"")
    assert list(jsonl.repair(str(empty))) == []


def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.jsonl", b'{"i":0}\nnot json\n{"i":2}\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        list(jsonl.repair(str(path)))
    assert path.read_bytes() == b'{"i":0}\nnot json\n{"i":2}\n'  # nothing lost
