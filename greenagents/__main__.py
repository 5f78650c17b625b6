"""``python -m greenagents``: the same as the ``greenagents`` command."""

from greenagents.cli import main

if __name__ == "__main__":
    main()
