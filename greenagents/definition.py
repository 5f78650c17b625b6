"""Checking an Agent class when it is defined, and configured copies of one (``with_options``).

A mistake in an agent's definition — ``prompt`` without ``self``, ``output = "Sentiment"`` that
names nothing, ``timeout = "5"``, ``fallbacks = "anthropic/claude-haiku-4-5"`` (a string, not a
tuple) — would otherwise surface as a confusing error in every Result of a batch, or escape
``call()``, which promises never to raise. :func:`check` runs from ``Agent.__init_subclass__``
and raises :class:`~greenagents.errors.ConfigError` naming the attribute and the fix, at the line
that defines the class.

>>> import greenagents as ga
>>> class Broken(ga.Agent):
...     timeout = "5"
Traceback (most recent call last):
...
greenagents.errors.ConfigError: Broken.timeout = '5': use a number of seconds > 0 (finite), or None \
for the default
"""

from __future__ import annotations

import inspect
import numbers
import sys
from typing import TYPE_CHECKING, Any

import tenacity

from . import providers
from .config import check_model, check_seconds
from .errors import ConfigError
from .retry import Retry

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["OPTIONS", "check", "configured"]

#: The class attributes ``Agent.with_options`` may set.
OPTIONS = ("model", "instructions", "output", "temperature", "max_tokens", "timeout", "retries",
           "fallbacks", "base_url", "first_token_timeout", "tools", "max_turns", "tool_concurrency",
           "tool_timeout", "tool_errors", "cache")


def check(agent: type[Agent]) -> None:
    """Raise :class:`ConfigError` for the first attribute of ``agent`` that cannot work.

    Only types and shapes are checked here: a missing API key is the environment's business and
    is reported by each call (the key may be set after the class is defined).
    """
    name = agent.__qualname__
    _check_prompt(agent, name)
    _check_output(agent, name)
    for limit in ("timeout", "first_token_timeout", "tool_timeout"):
        check_seconds(getattr(agent, limit, None), f"{name}.{limit}")
    _check_number(name, "temperature", agent.temperature, "a number (e.g. temperature = 0.2)")
    max_tokens = agent.max_tokens
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise ConfigError(f"{name}.max_tokens = {max_tokens!r}: use an int (e.g. max_tokens = "
                          "500) or None")
    _check_retries(name, agent.retries)
    for attribute in ("instructions", "base_url"):
        value = getattr(agent, attribute)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name}.{attribute} = {value!r}: use a string")
    if agent.model is not None:
        _check_model(f"{name}.model", agent.model)
    _check_fallbacks(name, agent.fallbacks)
    cache: Any = agent.cache  # typed bool | float | None, but a class may set anything
    if cache is not None and not isinstance(cache, bool) \
            and (not isinstance(cache, numbers.Real) or cache <= 0):
        raise ConfigError(f"{name}.cache = {cache!r}: use True, False, None or a TTL in seconds "
                          "> 0 (e.g. cache = 24 * 3600)")


def _check_prompt(agent: type[Agent], name: str) -> None:
    raw = inspect.getattr_static(agent, "prompt")
    if isinstance(raw, (staticmethod, classmethod)):
        raise ConfigError(f"{name}.prompt is a {type(raw).__name__}; make it a plain method, "
                          "e.g. `def prompt(self, text: str) -> str:` (its signature after self "
                          "is the agent's inputs)")
    if not callable(raw):
        raise ConfigError(f"{name}.prompt = {raw!r}: define it as a method, e.g. "
                          "`def prompt(self, text: str) -> str:`")
    parameters = list(inspect.signature(raw).parameters.values())
    first = parameters[0] if parameters else None
    if first is None or first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD) \
            or (first.name != "self" and first.annotation is not first.empty):
        shown = f"({', '.join(p.name for p in parameters)})"
        raise ConfigError(f"{name}.prompt{shown} has no `self`: write `def prompt(self, ...)`; "
                          "the parameters after self are the agent's inputs")
    agent._inputs()  # builds the input schema now: a bad annotation or *args is reported here


def _check_output(agent: type[Agent], name: str) -> None:
    output = agent.output
    if isinstance(output, str):
        resolved = vars(sys.modules.get(agent.__module__, object())).get(output)
        if resolved is None:
            raise ConfigError(
                f"{name}.output = {output!r} is a string, and no {output!r} is defined in "
                f"{agent.__module__} before the agent: set output to the type itself (define "
                f"{output} above the agent), or to str for free text")
        agent.output = resolved
    try:
        agent._output_spec()
    except Exception as exc:  # pydantic's schema errors: the type cannot be validated or sent
        raise ConfigError(f"{name}.output = {agent.output!r} cannot be used as an output type "
                          f"({type(exc).__name__}: {exc}); use str, a pydantic model, or a type "
                          "pydantic validates (list[str], Literal[...])") from None


def _check_number(name: str, attribute: str, value: Any, wanted: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise ConfigError(f"{name}.{attribute} = {value!r}: use {wanted} or None")


def _check_retries(name: str, retries: Any) -> None:
    if retries is None or isinstance(retries, (Retry, tenacity.Retrying)):
        return
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{name}.retries = {retries!r}: use an int >= 0 (retries after the "
                          "first attempt), ga.Retry(...), a tenacity.Retrying, or None")


def _check_model(where: str, model: Any) -> None:
    if check_model(model, where) is None:
        raise ConfigError(f"{where} = None: use a string 'provider/model'")
    try:
        providers.split(model)
    except ConfigError as exc:
        raise ConfigError(f"{where} = {model!r}: {exc}") from None


def _check_fallbacks(name: str, fallbacks: Any) -> None:
    example = "e.g. fallbacks = ('anthropic/claude-haiku-4-5',)"
    if isinstance(fallbacks, str) or not isinstance(fallbacks, (tuple, list)):
        raise ConfigError(f"{name}.fallbacks = {fallbacks!r}: use a tuple of models, {example} "
                          "(mind the trailing comma)")
    for number, fallback in enumerate(fallbacks):
        where = f"{name}.fallbacks[{number}]"
        if isinstance(fallback, tuple) and len(fallback) == 2 \
                and isinstance(fallback[1], str):
            _check_model(where, fallback[0])
        elif isinstance(fallback, str):
            _check_model(where, fallback)
        else:
            raise ConfigError(f"{where} = {fallback!r}: use 'provider/model' or "
                              f"('provider/model', base_url); {example}")


def configured(agent: type[Agent], options: dict[str, Any]) -> type[Agent]:
    """A subclass of ``agent`` with ``options`` as class attributes, checked like any agent.

    It keeps the agent's name and module, so Results, tracking and stats name it the same.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"{agent.__qualname__}.with_options(): unknown option(s) {unknown}; "
                          f"options are {', '.join(OPTIONS)}")
    namespace: dict[str, Any] = {"__module__": agent.__module__,
                                 "__qualname__": agent.__qualname__, **options}
    return type(agent.__name__, (agent,), namespace)
