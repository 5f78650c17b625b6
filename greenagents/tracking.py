"""Execution log (placeholder until the tracking issue lands): disabled unless configured."""

from __future__ import annotations

from typing import Any

from .config import settings
from .errors import ConfigError

__all__ = ["record"]


def record(result: Any) -> None:
    if settings().tracking is not None:
        raise ConfigError("tracking is not available yet")
