"""Every ```python and ```bash block of README.md runs as written, against the simulator.

Each block runs in a fresh subprocess (``python -c`` / ``bash -e -o pipefail -c``) in an empty
temporary directory, with the four provider variables pointing at a simulator of this module:

    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1   OPENAI_API_KEY=sk-sim-...
    ANTHROPIC_BASE_URL=http://127.0.0.1:PORT   ANTHROPIC_API_KEY=sk-ant-sim-...

so README blocks may rely on exactly that environment (the README says how to set it up). A block
meant as a fragment (a table of signatures, a command that needs a remote Redis) carries a
visible marker on the line before its fence::

    <!-- not run: why -->

Any other block that fails, writes a warning, or (for Python) does not start with
``import greenagents.monkey`` fails this test. Printed claims are checked loosely in
:data:`CLAIMS`, by the heading of the block's section.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from greenagents.testing import Simulator

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"^<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
_HEADING = re.compile(r"^#+\s+(.*)$")
RUN_LANGUAGES = ("python", "bash")
#: Sections whose claims are about a 1 s model; every other block gets a fast simulator.
SLOW_SECTIONS = frozenset({"30 seconds"})


@dataclass(frozen=True)
class Block:
    """One fenced block of the README: where it is, what it says, whether it is run."""

    language: str
    code: str
    line: int  # 1-based line of the opening fence
    section: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.language}-{re.sub(r'[^a-z0-9]+', '-', self.section.lower())}"


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with its language, section and ``not run`` marker."""
    found: list[Block] = []
    lines = text.splitlines()
    section, index = "", 0
    while index < len(lines):
        line = lines[index]
        heading = _HEADING.match(line)
        fence = _FENCE.match(line)
        if heading:
            section = heading.group(1).strip()
        elif fence:
            end = next((n for n in range(index + 1, len(lines)) if lines[n].startswith("```")),
                       None)
            assert end is not None, f"README.md:{index + 1}: fence never closed"
            before = lines[index - 1] if index else ""
            marker = _SKIP.match(before)
            found.append(Block(fence.group(1), "\n".join(lines[index + 1:end]) + "\n", index + 1,
                               section, marker.group("reason") if marker else None))
            index = end
        index += 1
    return found


ALL = blocks(README.read_text(encoding="utf-8"))
RUN = [b for b in ALL if b.language in RUN_LANGUAGES and b.skip_reason is None]


@dataclass(frozen=True)
class Ran:
    """What a block did: its output and how long it took."""

    stdout: str
    stderr: str
    wall_s: float


def _claim_30_seconds(ran: Ran) -> None:
    # 500 calls of a 1 s model, 200 at a time: three waves, "about three seconds". Loosely: it
    # did wait on the model (not 404s in no time) and ran concurrently (one by one is 500 s).
    assert re.search(r"^500 ok;", ran.stdout, re.M), ran.stdout
    assert 3 <= ran.wall_s < 60, ran.wall_s


def _claim_demo(ran: Ran) -> None:
    # "300 calls in about 7 s against 715 s one by one": all answered, and far from one by one.
    assert re.search(r"^calls\s+300$", ran.stdout, re.M), ran.stdout
    assert re.search(r"^ok / failed\s+300 / 0$", ran.stdout, re.M), ran.stdout
    speedup = re.search(r"^speed-up\s+(\d+)x$", ran.stdout, re.M)
    assert speedup and int(speedup.group(1)) >= 10, ran.stdout


def _claim_stats(ran: Ran) -> None:
    _claim_demo(ran)
    for agent in ("CategoryAgent", "SentimentAgent", "SummaryAgent"):
        assert re.search(rf"^greenagents\.demo\.{agent}\s+100\s+100\.0%", ran.stdout, re.M), \
            ran.stdout


#: Loose checks of what a section's blocks print, keyed by section heading.
CLAIMS: dict[str, Callable[[Ran], None]] = {
    "greenagents": _claim_demo,
    "30 seconds": _claim_30_seconds,
    "The command line": _claim_stats,
}


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Simulator]]:
    with Simulator(latency=1.0) as slow, Simulator(latency=0.01) as fast:
        yield {"slow": slow, "fast": fast}


def _env(sim: Simulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "GREENAGENTS_", "OLLAMA_"))}
    env.update(OPENAI_BASE_URL=sim.base_url, OPENAI_API_KEY="sk-sim-readme",
               ANTHROPIC_BASE_URL=sim.anthropic_url, ANTHROPIC_API_KEY="sk-ant-sim-readme",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


def run_block(block: Block, sim: Simulator, cwd: Path) -> Ran:
    command = [sys.executable, "-c", block.code] if block.language == "python" \
        else ["bash", "-e", "-o", "pipefail", "-c", block.code]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=_env(sim))
    ran = Ran(done.stdout, done.stderr, time.perf_counter() - started)
    assert done.returncode == 0, (f"README.md:{block.line} ({block.section}) exited "
                                  f"{done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n"
                                  f"{done.stderr}")
    return ran


def test_readme_has_blocks_to_run() -> None:
    assert len(RUN) >= 5, [b.id for b in RUN]


@pytest.mark.parametrize("block", [b for b in ALL if b.language in RUN_LANGUAGES],
                         ids=lambda b: b.id)
def test_block_is_marked_or_well_formed(block: Block) -> None:
    if block.skip_reason is not None:
        assert block.skip_reason, f"README.md:{block.line}: say why the block is not run"
    elif block.language == "python":
        first = next(line for line in block.code.splitlines() if line.strip())
        assert first.startswith("import greenagents.monkey"), (
            f"README.md:{block.line}: a Python example starts with `import greenagents.monkey`")


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_block_runs(block: Block, sims: dict[str, Simulator], tmp_path: Path) -> None:
    sim = sims["slow" if block.section in SLOW_SECTIONS else "fast"]
    ran = run_block(block, sim, tmp_path)
    noise = [line for line in ran.stderr.splitlines()
             if re.search(r"Warning\b|Traceback|greenlet is being finalized", line)]
    assert not noise, f"README.md:{block.line} wrote to stderr:\n{ran.stderr}"
    check = CLAIMS.get(block.section)
    if check is not None:
        check(ran)


def test_marker_parsing() -> None:
    text = "# A\n<!-- not run: needs Redis at 10.0.0.5 -->\n```bash\necho hi\n```\n```python\nx\n```\n"
    skipped, run = blocks(text)
    assert (skipped.skip_reason, skipped.section, skipped.line) == ("needs Redis at 10.0.0.5", "A", 3)
    assert (run.skip_reason, run.code) == (None, "x\n")
