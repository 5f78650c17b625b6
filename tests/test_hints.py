"""What a newcomer is told while things run: progress bars with tokens and cost, and how to
patch where they are (pytest or a program)."""

from __future__ import annotations

import pytest

import greenagents as ga
from greenagents.patching import how_to_patch
from greenagents.testing import Simulator

from .agents import SentimentAgent
from .conftest import run_python


def test_progress_bar_shows_tokens_and_cost_so_far(sim: Simulator,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    agent = SentimentAgent.with_options(base_url=sim.base_url)
    results = agent.batch([{"text": f"review {n}"} for n in range(6)], progress=True)
    assert all(r.ok for r in results)
    bar = capsys.readouterr().err
    assert "6/6" in bar and "ok=6" in bar and "failed=0" in bar
    assert "tokens=" in bar and "cost=$0.00" in bar


def test_progress_uses_tqdm_auto() -> None:
    out = run_python("""
        import sys
        from greenagents.progress import Progress
        with Progress(1, enabled=True) as bar:
            bar.update(ok=True)
        print("tqdm.auto" in sys.modules)
    """)
    assert out.stdout.strip() == "True", out.stderr


def test_patch_advice_names_pytest_under_pytest_and_the_program_elsewhere() -> None:
    assert "-p greenagents.monkey" in how_to_patch() and "conftest.py" in how_to_patch()
    program = run_python("""
        from greenagents.patching import how_to_patch
        print(how_to_patch())
    """)
    assert "first import of your program" in program.stdout, program.stderr
    unpatched_tests = run_python("""
        import pytest, warnings
        import greenagents as ga
        warnings.simplefilter("always")
        ga.each([1, 2], abs)
    """)
    assert "NotPatchedWarning" in unpatched_tests.stderr
    assert "under pytest, run it with `-p greenagents.monkey`" in unpatched_tests.stderr
    assert "first import of your program" not in unpatched_tests.stderr


def test_ga_exports_the_new_names() -> None:
    for name in ("summary", "Summary", "CallsFailedWarning"):
        assert name in ga.__all__ and getattr(ga, name) is not None
    assert callable(ga.summary)
