"""``python -m greenagents.testing``: the same command as ``greenagents sim``."""

from greenagents.testing.cli import sim

if __name__ == "__main__":
    sim(prog_name="python -m greenagents.testing")
