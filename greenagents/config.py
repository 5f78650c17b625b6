"""Settings: one validated, immutable :class:`Settings` per client, replaced whole by :func:`configure`.

Defaults come from the code, then from ``GREENAGENTS_*`` environment variables (read by
pydantic-settings: each is a field here, the Celery worker's in :class:`WorkerSettings`; only the
dashboard's token and the providers' own ``OPENAI_API_KEY``-style variables are read where they are
used), then from :func:`configure` calls or ``ga.Client(...)``'s arguments.
Settings are replaced, never mutated, so a greenlet or thread that read ``settings()`` keeps a
consistent view while another reconfigures. Each :class:`~greenagents.Client` has its own;
:func:`settings` and :func:`configure` act on the current client's (the default one outside any
client, see :mod:`greenagents.state`).

>>> import greenagents as ga
>>> ga.configure(max_concurrency=50).max_concurrency
50
"""

from __future__ import annotations

import functools
import math
import os
import threading
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from . import state
from .errors import ConfigError
from .state import current as current_state

__all__ = ["DashboardSettings", "Settings", "WorkerSettings", "check_model", "check_seconds",
           "configure", "environment", "from_environment", "settings", "worker_settings"]

ENV_PREFIX = "GREENAGENTS_"
# Structured settings are JSON in the environment; what to show when one is not.
_JSON_EXAMPLES = {"api_keys": '{"openai": "sk-..."}',
                  "base_urls": '{"openai": "http://127.0.0.1:8000/v1"}',
                  "rate_limits": '{"openai": {"rpm": 500, "tpm": 200000}}'}


class Settings(BaseModel):
    """Every knob of greenagents. Each field can be set by ``GREENAGENTS_<FIELD>`` in the environment
    (structured ones as JSON: ``GREENAGENTS_BASE_URLS='{"openai": "http://127.0.0.1:8000/v1"}'``),
    read by pydantic-settings (see :func:`environment`).

    API keys are ``SecretStr``: the repr shows ``'**********'``.

    >>> Settings(api_keys={"openai": "sk-secret"}).api_keys
    {'openai': SecretStr('**********')}
    """

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
        5, ge=1, description="Consecutive 5xx/connection/timeout failures that open an "
        "endpoint's circuit breaker; None turns breakers off.")
    breaker_cooloff: float = Field(
        30.0, gt=0, description="Seconds an open breaker refuses attempts before one probe.")
    learn_rate_limits: bool = Field(
        True, description="Pace calls by the rate-limit headers providers send, where no "
        "ga.rate_limit is set; False turns it off.")
    cache_namespace: str = Field(
        "", description="Part of every cache key: one tenant's answers are never another's.")
    otel: bool = Field(False, description="OpenTelemetry spans per call and attempt (extra: otel).")
    otel_capture_content: bool = Field(
        False, description="Also put prompts and answers (secrets masked) on the spans.")
    prometheus: bool = Field(False, description="Prometheus metrics (extra: prometheus).")
    log_calls: bool = Field(False, description="Log every call, attempt and wait at DEBUG.")
    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description='API key per provider, e.g. {"openai": "sk-..."}; a '
        "provider not named uses its variable (OPENAI_API_KEY...).")
    base_urls: dict[str, str] = Field(
        default_factory=dict, description='Base URL per provider, e.g. {"openai": '
        '"http://127.0.0.1:8000/v1"}; an agent\'s base_url wins, a provider not named uses its '
        "variable (OPENAI_BASE_URL...).")

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
_INSTRUMENTS = ("otel", "prometheus", "log_calls")
_instrumented = False  # has any integration been on? Until then its module is never imported.
_FROM_ENV = "GREENAGENTS_* environment variables"


def _instrument(current: Settings) -> Settings:
    """Subscribe or unsubscribe the integrations the settings turn on or off."""
    global _instrumented
    if _instrumented or any(getattr(current, name) for name in _INSTRUMENTS):
        _instrumented = True
        from . import instrument  # lazily: it imports the integrations that are turned on

        instrument.apply(current)
    return current


@functools.cache
def _from_environment(kind: type[BaseModel]) -> type[Any]:
    """A pydantic-settings twin of ``kind`` (same fields, prefix ``GREENAGENTS_``) to read the
    environment with. Built on first use, not at import: ``pydantic_settings`` imports asyncio,
    hence ``ssl``, which must wait for monkey-patching (the CLI imports this module first)."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class FromEnvironment(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    fields: dict[str, Any] = {name: (field.annotation, field)
                              for name, field in kind.model_fields.items()}
    twin: type[Any] = create_model(f"{kind.__name__}FromEnvironment", __base__=FromEnvironment,
                                   **fields)
    return twin


def _read_env(kind: type[BaseModel]) -> dict[str, Any]:
    """``kind``'s fields found in the environment, as pydantic-settings reads them (structured
    ones decoded from JSON); "", "none" and "null" mean None.

    pydantic-settings is imported only when one of them is set: it costs ~0.2 s and imports
    ``ssl`` (through asyncio), so ``import greenagents; ga.configure(...); ga.patch()`` stays
    ssl-free without ``GREENAGENTS_*`` variables. (With them, ``ssl`` is imported before the
    patch; harmless, asyncio keeps the module, whose attributes the patch replaces, and
    :func:`greenagents.patch` still warns about anything that copied ``ssl.SSLContext``.)
    """
    names = {ENV_PREFIX + name.upper() for name in kind.model_fields}
    if not any(variable.upper() in names for variable in os.environ):
        return {}
    from pydantic_settings import EnvSettingsSource, SettingsError

    try:
        values = EnvSettingsSource(_from_environment(kind))()
    except SettingsError as exc:  # a structured field that is not JSON; its value may be a key
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        example = _JSON_EXAMPLES.get(field, "{...}")
        raise ConfigError(f"invalid setting in {_FROM_ENV}: {field}: {exc.__cause__}; expected "
                          f"JSON such as {ENV_PREFIX}{field.upper()}='{example}'") from None
    return {name: None if isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")
            else raw for name, raw in values.items()}


def environment() -> dict[str, Any]:
    """The settings the ``GREENAGENTS_*`` variables give, read now (not validated yet).

    >>> import os
    >>> os.environ["GREENAGENTS_RETRIES"] = "5"
    >>> environment()["retries"]
    '5'
    >>> del os.environ["GREENAGENTS_RETRIES"]
    """
    return _read_env(Settings)


def _validated(values: dict[str, Any], source: str, *, environment: bool = False) -> Settings:
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {source}; "
                          f"known settings: {', '.join(Settings.model_fields)}")
    try:
        return Settings.model_validate(values, context={"environment": environment})
    except ValidationError as exc:
        raise ConfigError(f"invalid setting in {source}: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _from_env() -> Settings:
    return _validated(environment(), _FROM_ENV, environment=True)


def settings() -> Settings:
    """The current client's settings (defaults, overridden by ``GREENAGENTS_*`` variables and
    ``configure``)."""
    found = current_state().settings  # on every call, many times a call: kept this short
    return _first_read() if found is None else found


def _first_read() -> Settings:
    current = current_state()
    with _lock:
        found = current.settings
        if found is None:
            found = _from_env()
            current.settings = _instrument(found) if current is state.default() else found
    return found


def settings_for_client(changes: dict[str, Any]) -> Settings:
    """The settings of a new client: defaults, the environment, then ``changes``.

    The integrations (``otel``, ``prometheus``, ``log_calls``) subscribe process-wide hooks, so
    they are the default client's to set, not one client's.
    """
    _refuse_instruments(changes, "ga.Client()")
    base = _from_env().model_dump(exclude_unset=True)
    return _validated({**base, **changes}, "ga.Client()")


def _refuse_instruments(changes: dict[str, Any], where: str) -> None:
    named = [name for name in _INSTRUMENTS if name in changes]
    if named:
        raise ConfigError(f"{', '.join(named)} in {where}: the integrations are process-wide "
                          f"(one set of hooks for every client); use ga.configure({named[0]}=...) "
                          f"outside any client, or {ENV_PREFIX}{named[0].upper()}")


def configure(**changes: Any) -> Settings:
    """Change the current client's settings (the default client's outside any); returns them.

    Unknown names and bad values raise :class:`~greenagents.errors.ConfigError` naming the fix.

    >>> import greenagents as ga
    >>> ga.configure(retries=5, timeout=30).retries
    5
    """
    current = state.current()
    is_default = current is state.default()
    if not is_default:
        _refuse_instruments(changes, "configure() inside a client")
    with _lock:
        base = (current.settings or _from_env()).model_dump(exclude_unset=True)
        found = _validated({**base, **changes}, "configure()")
        current.settings = _instrument(found) if is_default else found  # not if that failed
        return found


def reset() -> Settings:
    """Forget every ``configure`` call of the current client: back to defaults and the
    environment."""
    current = state.current()
    with _lock:
        current.settings = None
    return settings()


class WorkerSettings(BaseModel):
    """The Celery worker's variables (``greenagents.celery.worker``), beside :class:`Settings`'.

    >>> WorkerSettings(celery_tasks="app:Summarize, app:Classify").tasks()
    ['app:Summarize', 'app:Classify']
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    celery_url: str = Field("redis://127.0.0.1:6379/0",
                            description="The Redis of broker, results and shared limits.")
    celery_visibility_timeout: float = Field(
        3600.0, gt=0, description="Seconds before an unacknowledged call goes to another worker.")
    celery_tasks: str = Field("", description="module:Name targets registered as tasks of their "
                              "own, comma-separated.")
    rate_limits: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='Budgets shared by every worker, as JSON: {"openai": '
        '{"rpm": 5000, "tpm": 2000000}}.')
    prometheus_port: int | None = Field(None, ge=1, le=65535,
                                        description="Serve Prometheus metrics on this port.")

    def tasks(self) -> list[str]:
        """The ``module:Name`` targets of :attr:`celery_tasks`."""
        return [part.strip() for part in self.celery_tasks.split(",") if part.strip()]


class DashboardSettings(BaseModel):
    """``greenagents dashboard``'s variables, beside :class:`Settings`'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dashboard_token: SecretStr | None = Field(
        None, description="The token the dashboard asks for (off loopback it is required).")


_Part = TypeVar("_Part", bound=BaseModel)


def from_environment(kind: type[_Part]) -> _Part:
    """``kind`` (:class:`WorkerSettings`, :class:`DashboardSettings`) from the ``GREENAGENTS_*``
    variables, read now; a ConfigError names a bad one.

    >>> from_environment(DashboardSettings).dashboard_token is None
    True
    """
    try:
        return kind.model_validate(_read_env(kind))
    except ValidationError as exc:
        raise ConfigError(f"invalid setting in {_FROM_ENV}: {_problems(exc)}") from None


def worker_settings() -> WorkerSettings:
    """The worker's settings from the environment, read now; a ConfigError names a bad one.

    >>> worker_settings().celery_visibility_timeout
    3600.0
    """
    return from_environment(WorkerSettings)


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
