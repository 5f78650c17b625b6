"""Process-wide settings: one validated, immutable :class:`Settings`, replaced whole by :func:`configure`.

Defaults come from the code, then from ``GREENAGENTS_*`` environment variables, then from
:func:`configure` calls. Settings are replaced, never mutated, so a greenlet or thread that read
``settings()`` keeps a consistent view while another reconfigures.

>>> import greenagents as ga
>>> ga.configure(max_concurrency=50).max_concurrency
50
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import ConfigError

__all__ = ["Settings", "check_model", "check_seconds", "configure",
           "settings"]

ENV_PREFIX = "GREENAGENTS_"


class Settings(BaseModel):
    """Every knob of greenagents. Each field can be set by ``GREENAGENTS_<FIELD>`` in the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrency: int = Field(20, ge=1, description="Calls running at once in batch/each/stream.")
    default_model: str = Field("openai/gpt-4o-mini", min_length=1,
                               description="Model of agents that name none.")
    timeout: float = Field(60.0, gt=0, allow_inf_nan=False,
                           description="Seconds one attempt may take, whole (connect to last byte).")
    connect_timeout: float = Field(10.0, gt=0, allow_inf_nan=False,
                                   description="Seconds to open a connection (within timeout).")
    retries: int = Field(3, ge=0, description="Retries after the first attempt; 0 turns them off.")
    retry_after_max: float = Field(
        60.0, gt=0, allow_inf_nan=False,
        description="Longest Retry-After honoured; beyond it the call fails.")
    max_response_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="Largest answer body read, decoded; a bigger one fails with ResponseTooLarge.")
    http_pool_size: int | None = Field(
        None, ge=1, description="Kept-alive connections per base URL; None sizes it to the load.")
    http_transport: Literal["auto", "urllib3", "geventhttpclient"] = Field(
        "auto", description='HTTP client of provider calls: "auto" (geventhttpclient when '
        'installed and patched, else urllib3), "urllib3" or "geventhttpclient" (extra: fast).')
    tracking: str | None = Field(
        None, description='Execution log, e.g. "sqlite:///runs.db"; None turns it off.')
    tracking_payloads: bool = Field(False, description="Also record inputs and outputs.")
    progress: bool = Field(False, description="Show a progress bar in batch/each/stream.")
    cache: str | None = Field(
        None, description='Response cache for every agent, e.g. "sqlite:///.greenagents/cache.db" '
        'or "redis://host:6379/0"; None caches only agents with cache=True.')
    max_cost_usd: float | None = Field(
        None, gt=0, description="USD this process may spend; an attempt that could cross it is "
        "not sent (BudgetExceeded).")
    breaker_failures: int | None = Field(
        None, ge=1, description="Consecutive 5xx/connection/timeout failures that open an "
        "endpoint's circuit breaker, e.g. 5; None (the default) turns breakers off.")
    breaker_cooloff: float = Field(
        30.0, gt=0, description="Seconds an open breaker refuses attempts before one probe.")
    cache_namespace: str = Field(
        "", description="Part of every cache key: one tenant's answers are never another's.")
    otel: bool = Field(False, description="OpenTelemetry spans per call and attempt (extra: otel).")
    otel_capture_content: bool = Field(
        False, description="Also put prompts and answers (secrets masked) on the spans.")
    prometheus: bool = Field(False, description="Prometheus metrics (extra: prometheus).")
    log_calls: bool = Field(False, description="Log every call, attempt and wait at DEBUG.")

    @field_validator("timeout", "connect_timeout", "retry_after_max", "max_response_bytes",
                     "max_concurrency", "retries", mode="before")
    @classmethod
    def _number_not_text(cls, value: Any, info: ValidationInfo) -> Any:
        """``configure(timeout="5")`` or ``True`` is a mistake (only the environment speaks in
        strings)."""
        if isinstance(value, bool) or (isinstance(value, str)
                                       and not (info.context or {}).get("environment")):
            raise ValueError(f"expected a number, got {value!r}")
        return value

    @field_validator("tracking")
    @classmethod
    def _sqlite_only(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith("sqlite:///"):
            raise ValueError(f"{value!r}: only SQLite is supported; use "
                             "'sqlite:///path/to/runs.db' (or None to turn it off)")
        return value


_lock = threading.Lock()
_current: Settings | None = None
_INSTRUMENTS = ("otel", "prometheus", "log_calls")
_instrumented = False  # has any integration been on? Until then its module is never imported.


def _instrument(current: Settings) -> Settings:
    """Subscribe or unsubscribe the integrations the settings turn on or off."""
    global _instrumented
    if _instrumented or any(getattr(current, name) for name in _INSTRUMENTS):
        _instrumented = True
        from . import instrument  # lazily: it imports the integrations that are turned on

        instrument.apply(current)
    return current


def _from_env() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = None if raw.lower() in ("", "none", "null") else raw
    return values


def _validated(values: dict[str, Any], source: str, *, environment: bool = False) -> Settings:
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {source}; "
                          f"known settings: {', '.join(Settings.model_fields)}")
    try:
        return Settings.model_validate(values, context={"environment": environment})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid setting in {source}: {problems}") from None


def settings() -> Settings:
    """The current settings (defaults, overridden by ``GREENAGENTS_*`` variables and ``configure``)."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = _instrument(_validated(_from_env(), "GREENAGENTS_* environment variables",
                                                  environment=True))
    return _current


def configure(**changes: Any) -> Settings:
    """Change settings for the whole process; returns the new :class:`Settings`.

    Unknown names and bad values raise :class:`~greenagents.errors.ConfigError` naming the fix.

    >>> import greenagents as ga
    >>> ga.configure(retries=5, timeout=30).retries
    5
    """
    global _current
    with _lock:
        base = (_current or _validated(_from_env(), "GREENAGENTS_* environment variables",
                                       environment=True)).model_dump(exclude_unset=True)
        _current = _instrument(_validated({**base, **changes}, "configure()"))
        return _current


def reset() -> Settings:
    """Forget every ``configure`` call: back to defaults and the environment (used by tests)."""
    global _current
    with _lock:
        _current = None
    return settings()


def check_seconds(value: Any, where: str) -> float | None:
    """``value`` as a time limit in seconds: None, or a finite number > 0; else a ConfigError.

    ``where`` names the setting in the message (e.g. ``"MyAgent.timeout"``).

    >>> check_seconds(2, "MyAgent.timeout")
    2.0
    >>> check_seconds(float("nan"), "MyAgent.timeout")
    Traceback (most recent call last):
    ...
    greenagents.errors.ConfigError: MyAgent.timeout = nan: use a number of seconds > 0 (finite), \
or None for the default
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where} = {value!r}: use a number of seconds > 0 (finite), or None "
                          "for the default")
    return float(value)


def check_model(value: Any, where: str) -> str | None:
    """``value`` as a model name: None (the default model) or a non-empty ``"provider/name"``.

    >>> check_model("", "MyAgent.model")
    Traceback (most recent call last):
    ...
    greenagents.errors.ConfigError: MyAgent.model = '': use a string 'provider/model' (name a \
model, e.g. 'openai/gpt-4o-mini'), or None for the default_model setting
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} = {value!r}: use a string 'provider/model' (name a model, "
                          "e.g. 'openai/gpt-4o-mini'), or None for the default_model setting")
    return value
