"""Celery as a newcomer meets it (issue 14): a worker that cannot import names where it looked,
registered agents' results come back as their pydantic models, and nothing is printed at exit."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="NO REDIS-SERVER ON PATH: install it, as .ci/run does")


def test_from_json_gives_a_known_agents_model_and_leaves_the_rest_alone() -> None:
    import greenagents as ga
    from greenagents.celery import from_json, to_json

    from .agents import Sentiment, SentimentAgent, SummaryAgent

    value = {"label": "positive", "confidence": 0.9}
    known = from_json(to_json(ga.Result(target=ga.runtime.target_name(SentimentAgent), value=value)))
    assert known.value == Sentiment(**value)
    text = from_json(to_json(ga.Result(target=ga.runtime.target_name(SummaryAgent), value="hi")))
    assert text.value == "hi"
    unknown = from_json(to_json(ga.Result(target="not_imported_here.Agent", value=value)))
    assert unknown.value == value

SCRIPT = """
    import greenagents.monkey
    import os, subprocess
    import greenagents.celery as ga_celery
    from greenagents.celery.local import Workers, redis_server
    from greenagents.testing import Simulator
    from tests.agents import Sentiment, SentimentAgent
    import sys
    sys.path.insert(0, "elsewhere")
    import only_here   # in ./elsewhere, which the workers do not have on sys.path

    env = {"PYTHONPATH": ROOT, "OPENAI_BASE_URL": "", "OPENAI_API_KEY": "sk-sim"}
    with Simulator(latency=0.05) as sim, redis_server() as url, \\
            Workers(url, env={**env, "OPENAI_BASE_URL": sim.base_url},
                    stderr=subprocess.DEVNULL) as workers:
        workers.start(1, concurrency=10, GREENAGENTS_CELERY_TASKS="tests.agents:SentimentAgent")
        task = ga_celery.register(workers.app, SentimentAgent)
        kept = [task.delay(text=f"review {n}") for n in range(5)]   # still referenced at exit
        values = [ga_celery.from_json(result.get(timeout=60)).value for result in kept]
        print("models:", all(isinstance(value, Sentiment) for value in values), flush=True)
        (missing,) = ga_celery.batch(workers.app, [(only_here.double, (2,), {})])
        print("missing:", missing.error, flush=True)
    print("done", flush=True)
"""


@needs_redis
def test_celery_newcomer_friction(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "only_here.py").write_text("def double(n):\n    return 2 * n\n")
    script = textwrap.dedent(SCRIPT).replace("ROOT", repr(str(ROOT)))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180,
                          env={"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
                               "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "models: True" in done.stdout  # from_json knows the agent: its model, not a dict
    missing = done.stdout.split("missing: ", 1)[1]
    assert "the worker cannot import only_here:double" in missing
    assert f"it ran in {tmp_path} (on sys.path) with PYTHONPATH={ROOT}." in missing
    assert "PYTHONPATH=. celery -A" in missing
    assert done.stdout.rstrip().endswith("done")
    assert "greenlet is being finalized" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
