"""Progress bars for runs, drawn by tqdm (imported only when a bar is asked for).

>>> with Progress(total=2, enabled=False) as bar:
...     bar.update(ok=True)
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Counts finished calls, split into ok and failed; a no-op when not ``enabled``."""

    def __init__(self, total: int | None, *, enabled: bool, desc: str = "calls"):
        self.ok = 0
        self.failed = 0
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm  # lazy: tqdm imports socket-using modules

            self._bar = tqdm(total=total, desc=desc, unit="call", dynamic_ncols=True)

    def update(self, *, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self._bar is not None:
            self._bar.set_postfix(ok=self.ok, failed=self.failed, refresh=False)
            self._bar.update(1)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
