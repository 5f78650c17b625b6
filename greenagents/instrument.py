"""Turn the built-in integrations on and off to match the settings.

``ga.configure(otel=True, prometheus=True, log_calls=True)`` (or ``GREENAGENTS_OTEL=1``…)
subscribes their hooks listeners; each integration's module, and the library behind it, is
imported only when it is turned on, so ``opentelemetry`` and ``prometheus_client`` cost nothing
to a process that does not use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import hooks
from .errors import ConfigError

if TYPE_CHECKING:  # config imports this module lazily; no cycle at run time
    from .config import Settings

__all__ = ["apply"]

# setting -> module whose ``listener`` (and ``KINDS``) it subscribes
_INTEGRATIONS = {"log_calls": "logs", "otel": "otel", "prometheus": "prometheus"}
_on: dict[str, Any] = {}  # setting -> its module, while subscribed


def apply(current: Settings) -> None:
    """Subscribe the integrations ``current`` turns on; unsubscribe those it turns off."""
    for setting, name in _INTEGRATIONS.items():
        wanted = bool(getattr(current, setting))
        if wanted and setting not in _on:
            try:
                module = importlib.import_module(f"{__package__}.{name}")
            except ImportError as exc:
                raise ConfigError(f"{setting}=True needs {exc.name or 'a missing package'}: "
                                  f"pip install 'greenagents[{name}]'") from None
            hooks.subscribe(module.listener, *module.KINDS)
            _on[setting] = module
        elif not wanted and setting in _on:
            hooks.unsubscribe(_on.pop(setting).listener)
