"""Progress bars for runs, drawn by tqdm (imported only when a bar is asked for).

``tqdm.auto`` picks a notebook widget in Jupyter and a text bar in a terminal. Besides the
count, the bar shows ok/failed and the tokens and cost spent so far, so a run that burns money
or fails shows it while it runs.

>>> with Progress(total=2, enabled=False) as bar:
...     bar.update(ok=True, tokens=30, cost_usd=0.001)
...     bar.update(ok=False)
>>> bar.postfix()
{'ok': 1, 'failed': 1, 'tokens': '30', 'cost': '$0.0010'}
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .result import Result

__all__ = ["Progress"]


class Progress:
    """Counts finished calls (ok and failed), tokens and cost; a no-op bar when not ``enabled``."""

    def __init__(self, total: int | None, *, enabled: bool, desc: str = "calls"):
        self.ok = 0
        self.failed = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm  # lazy: tqdm imports socket-using modules

            self._bar = tqdm(total=total, desc=desc, unit="call", dynamic_ncols=True)

    def update(self, *, ok: bool, tokens: int = 0, cost_usd: float | None = None) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.tokens += tokens
        self.cost_usd += cost_usd or 0.0
        if self._bar is not None:
            self._bar.set_postfix(self.postfix(), refresh=False)
            self._bar.update(1)

    def add(self, result: Result[Any]) -> None:
        """Count one finished call, with its tokens and cost."""
        self.update(ok=result.ok, tokens=result.usage.total_tokens if result.usage else 0,
                    cost_usd=result.cost_usd)

    def postfix(self) -> dict[str, Any]:
        """What the bar shows after its count."""
        shown: dict[str, Any] = {"ok": self.ok, "failed": self.failed}
        if self.tokens:
            shown["tokens"] = f"{self.tokens:,}"
        if self.cost_usd:
            shown["cost"] = f"${self.cost_usd:.4f}"
        return shown

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
