"""API keys: checked when resolved, and never shown by any error that leaves the library.

Before: ``OPENAI_API_KEY=$'sk-...\\n'`` put ``Invalid header value b'Bearer sk-...\\n'`` in the
Result, its repr, the JSONL output and the Celery JSON; a key echoed back by a server reached them
too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import greenagents as ga
from greenagents import jsonl, tracking
from greenagents.celery import wire
from greenagents.errors import AuthError, ConfigError
from greenagents.testing import Simulator

from .test_hostile_answers import hostile  # noqa: F401  # the fixture

KEY = "sk-proj-abcdef1234567890"


def _everywhere(result: ga.Result[object], db: Path) -> str:
    """Every text the library lets out about ``result``: str, repr, JSONL, Celery JSON, the log."""
    assert tracking.flush(timeout=30)
    logged = sqlite3.connect(db).execute("SELECT error_message FROM calls").fetchall()
    return "\n".join([str(result.error), repr(result), repr(result.error),
                      jsonl.dumps({"error": f"{type(result.error).__name__}: {result.error}"}),
                      json.dumps(wire.to_json(result)), str(logged)])


def test_a_pasted_newline_around_the_key_is_stripped(
        sim_factory: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch) -> None:
    sim = sim_factory(api_key=KEY)
    monkeypatch.setenv("OPENAI_API_KEY", f"  {KEY}\n")

    class Asker(ga.Agent):
        base_url = sim.base_url

    result = Asker.call("hi")
    assert result.ok, result.error


@pytest.mark.parametrize("bad", [f"{KEY[:8]}\n{KEY[8:]}", f"{KEY[:8]}\u2019{KEY[8:]}",
                                 f"{KEY[:8]} {KEY[8:]}"])
def test_a_key_that_cannot_be_a_header_is_a_config_error_that_hides_it(
        bad: str, sim: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", bad)
    ga.configure(tracking=f"sqlite:///{tmp_path / 'runs.db'}")

    class Asker(ga.Agent):
        base_url = sim.base_url

    result = Asker.call("hi")
    assert isinstance(result.error, ConfigError)
    assert "OPENAI_API_KEY holds a character that cannot be sent" in str(result.error)
    seen = _everywhere(result, tmp_path / "runs.db")
    ga.configure(tracking=None)
    assert KEY[8:] not in seen and KEY[:8] not in seen


def test_a_key_echoed_by_the_server_is_masked_everywhere(
        hostile: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    local_key = "local-secret-98765"  # not shaped like a provider key: masked as the key in use
    monkeypatch.setenv("OPENAI_API_KEY", local_key)
    ga.configure(tracking=f"sqlite:///{tmp_path / 'runs.db'}")

    class Echoed(ga.Agent):
        base_url = f"{hostile}/echo-auth"

    result = Echoed.call("hi")
    assert isinstance(result.error, AuthError) and "bad credentials" in str(result.error)
    seen = _everywhere(result, tmp_path / "runs.db")
    ga.configure(tracking=None)
    assert local_key not in seen


def test_a_plain_function_leaking_a_key_shape_is_masked_in_its_result() -> None:
    def leaky() -> None:
        raise ValueError(f"Invalid header value b'Bearer {KEY}\\n'")

    (result,) = ga.batch([(leaky, {})])
    assert KEY not in str(result.error) and KEY not in repr(result)
    assert isinstance(result.error, ValueError)


def test_an_error_whose_repr_holds_the_key_is_replaced() -> None:
    error = UnicodeEncodeError("latin-1", f"Bearer {KEY}\u2019", 30, 31, "ordinal not in range")
    masked = ga.errors.scrub(error)
    assert KEY not in repr(masked) and "UnicodeEncodeError" in str(masked)
