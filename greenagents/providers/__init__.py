"""Model names to endpoints, and the one I/O function the agent layer calls: :func:`complete`.

``"provider/name"`` picks the provider; a bare name means OpenAI. The base URL is the explicit
``base_url`` argument, else the client's ``base_urls`` setting, else ``OPENAI_BASE_URL`` /
``ANTHROPIC_BASE_URL`` (``OLLAMA_HOST`` for Ollama), else the public API. Keys come from the
client's ``api_keys`` setting, else ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``; a missing key is an
error only when talking to the public API (local servers rarely want one).

The environment is read on every :func:`resolve` call, so tests can ``monkeypatch.setenv``; the
endpoint built for one combination of inputs is cached. Importing this package does not import
urllib3 or ssl (that waits for the first request, after monkey-patching).

>>> ep = resolve("ollama/llama3")
>>> ep.provider.name, ep.model, ep.base_url
('ollama', 'llama3', 'http://127.0.0.1:11434/v1')
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import http, transport
from ..config import settings
from ..errors import ConfigError
from .anthropic import AnthropicProvider
from .base import Completion, Message, Provider, Request, ToolRequest
from .openai import OpenAIProvider, strict_schema

__all__ = ["AnthropicProvider", "Completion", "Endpoint", "Message", "OpenAIProvider",
           "Provider", "Request", "ToolRequest", "complete", "resolve", "split", "strict_schema"]


@dataclass(frozen=True)
class _Kind:
    """How to reach one provider: its class, variables and public default."""

    make: Callable[..., Provider]
    key_env: str | None
    base_url_env: str
    default_base_url: str


_KINDS: dict[str, _Kind] = {
    "openai": _Kind(OpenAIProvider, "OPENAI_API_KEY", "OPENAI_BASE_URL",
                    "https://api.openai.com/v1"),
    "anthropic": _Kind(AnthropicProvider, "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                       "https://api.anthropic.com"),
    "ollama": _Kind(OpenAIProvider, None, "OLLAMA_HOST", "127.0.0.1:11434"),
}


@dataclass(frozen=True)
class Endpoint:
    """A resolved model: the provider that speaks its format, the model name to send, where, how.

    The API key is held but never shown: ``repr`` says only whether one is set.

    >>> resolve("openai/gpt-4o-mini", base_url="http://127.0.0.1:8000/v1")
    Endpoint(provider='openai', model='gpt-4o-mini', base_url='http://127.0.0.1:8000/v1', \
key=None)
    """

    provider: Provider
    model: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    key_env: str | None = None

    @functools.cached_property
    def scopes(self) -> tuple[str, str]:
        """``(provider@base_url, provider@base_url/model)``: what cooldowns and what breakers and
        learned limits are kept per (made once: an endpoint is cached and reused by every call).

        >>> resolve("openai/m", base_url="http://127.0.0.1:9/v1").scopes[1]
        'openai@http://127.0.0.1:9/v1/m'
        """
        scope = f"{self.provider.name}@{self.base_url}"
        return scope, f"{scope}/{self.model}"

    def __repr__(self) -> str:
        key = f"'set from {self.key_env}'" if self.api_key else "None"
        return (f"Endpoint(provider={self.provider.name!r}, model={self.model!r}, "
                f"base_url={self.base_url!r}, key={key})")


def _ollama_url(host: str) -> str:
    """``OLLAMA_HOST`` (``host[:port]`` or a URL) as the OpenAI-compatible base URL."""
    url = host if "://" in host else f"http://{host}"
    scheme, rest = url.split("://", 1)
    netloc, _, path = rest.partition("/")
    if ":" not in netloc.rsplit("]", 1)[-1]:
        netloc += ":11434"
    path = path.strip("/")
    return f"{scheme}://{netloc}/{path or 'v1'}"


def resolve(model: str, *, base_url: str | None = None) -> Endpoint:
    """The :class:`Endpoint` for ``"provider/name"``, with URL and key from the environment.

    Raises :class:`~greenagents.errors.ConfigError` before any request for an unknown provider, or
    when the public API would be called without a key.

    >>> resolve("mistral/large")
    Traceback (most recent call last):
    ...
    greenagents.errors.ConfigError: unknown provider 'mistral' in model 'mistral/large'; known \
providers: anthropic, ollama, openai (any OpenAI-compatible server: 'openai/<model>' with \
base_url=... or OPENAI_BASE_URL)
    """
    prefix, name = split(model)
    kind = _KINDS[prefix]
    current = settings()
    if current.api_keys or current.base_urls:
        _check_providers(current.api_keys, "api_keys")
        _check_providers(current.base_urls, "base_urls")
    env_url = current.base_urls.get(prefix) or os.environ.get(kind.base_url_env) or None
    secret = current.api_keys.get(prefix)
    if secret is not None:
        return _endpoint(prefix, name, base_url, env_url, secret.get_secret_value(),
                         f"api_keys[{prefix!r}]")
    key = (os.environ.get(kind.key_env) or None) if kind.key_env else None
    return _endpoint(prefix, name, base_url, env_url, key, kind.key_env)


def _check_providers(by_provider: Mapping[str, Any], setting: str) -> None:
    unknown = sorted(set(by_provider) - set(_KINDS))
    if unknown:
        raise ConfigError(f"{setting} names {', '.join(map(repr, unknown))}, not a provider; "
                          f"use {', '.join(sorted(_KINDS))}")


# "provider:model" (pydantic-ai's spelling) of providers other libraries know and we do not:
# refused by name rather than sent to OpenAI as a model called "groq:llama-3.1-8b".
_FOREIGN = frozenset({"azure", "bedrock", "cohere", "deepseek", "gemini", "google", "google-gla",
                      "google-vertex", "groq", "huggingface", "mistral", "openrouter", "together",
                      "vertex", "vertex_ai", "xai"})


def split(model: str) -> tuple[str, str]:
    """``(provider, name)`` of a model string, or :class:`ConfigError` when it cannot work.

    ``"provider/name"`` names the provider; a bare name means OpenAI (or the server at
    ``OPENAI_BASE_URL``); ``"provider:name"`` with a provider we speak is read as
    ``"provider/name"``, and with one we do not is refused (never sent on as a model name).

    >>> split("gpt-4o-mini"), split("anthropic:claude-haiku-4-5"), split("ollama/llama3:8b")
    (('openai', 'gpt-4o-mini'), ('anthropic', 'claude-haiku-4-5'), ('ollama', 'llama3:8b'))
    """
    prefix, slash, name = model.partition("/")
    if not slash:
        before, colon, after = model.partition(":")
        if colon and (before in _KINDS or before in _FOREIGN):
            prefix, name = before, after
        else:
            prefix, name = "openai", model
    if prefix not in _KINDS:
        raise ConfigError(f"unknown provider {prefix!r} in model {model!r}; known providers: "
                          f"{', '.join(sorted(_KINDS))} (any OpenAI-compatible server: "
                          "'openai/<model>' with base_url=... or OPENAI_BASE_URL)")
    if not name:
        raise ConfigError(f"model {model!r} names no model after the provider; e.g. "
                          "'openai/gpt-4o-mini'")
    return prefix, name


# What an API key may hold: visible ASCII (anything else cannot go in an HTTP header as is).
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")


def _checked_key(key: str | None, variable: str | None) -> str | None:
    """``key`` without surrounding whitespace (a pasted newline), or a ConfigError naming
    ``variable`` when it cannot be a header value. The key itself is never shown.

    >>> _checked_key(" sk-abc" + chr(10), "OPENAI_API_KEY")  # a pasted newline
    'sk-abc'
    >>> _checked_key("sk-abc\\u2019def", "OPENAI_API_KEY")
    Traceback (most recent call last):
    ...
    greenagents.errors.ConfigError: OPENAI_API_KEY holds a character that cannot be sent in an \
HTTP header (position 7: non-ASCII); copy the key again, without quotes or spaces
    """
    if key is None:
        return None
    key = key.strip()
    if not key:
        return None
    if _KEY_CHARS.fullmatch(key) is None:
        at = next(i for i, char in enumerate(key) if not 0x21 <= ord(char) <= 0x7e)
        what = "a space or control character" if ord(key[at]) < 0x80 else "non-ASCII"
        raise ConfigError(f"{variable or 'the API key'} holds a character that cannot be sent in "
                          f"an HTTP header (position {at + 1}: {what}); copy the key again, "
                          "without quotes or spaces")
    return key


@functools.lru_cache(maxsize=256)
def _endpoint(prefix: str, name: str, base_url: str | None, env_url: str | None,
              key: str | None, key_from: str | None) -> Endpoint:
    """``key_from`` names where the key came from in messages (``OPENAI_API_KEY``,
    ``api_keys['openai']``)."""
    kind = _KINDS[prefix]
    key = _checked_key(key, key_from)
    url = base_url or env_url or kind.default_base_url
    if prefix == "ollama":
        url = _ollama_url(url)
    elif key is None and url.rstrip("/") == kind.default_base_url:
        raise ConfigError(f"no API key for {prefix}: set {kind.key_env}, or point "
                          f"{kind.base_url_env} (or base_url=...) at a local server")
    provider = kind.make(name=prefix, base_url=url, api_key=key, key_env=key_from,
                         base_url_env=kind.base_url_env)
    return Endpoint(provider, name, provider.base_url, key, key_from)


def complete(endpoint: Endpoint, messages: Sequence[Message], *,
             schema: dict[str, Any] | None = None, schema_name: str = "output",
             temperature: float | None = None, max_tokens: int | None = None,
             timeout: float | None = None, tools: Sequence[Mapping[str, Any]] = (),
             on_response: Callable[[http.HttpResponse], None] | None = None) -> Completion:
    """Ask ``endpoint`` to answer ``messages``: build, POST over the shared pool, parse.

    One attempt, no retries (the retry layer owns those). Raises the mapped
    :class:`~greenagents.errors.ProviderError` on failure. ``on_response`` sees the HTTP answer,
    whatever its status, before it is parsed (the rate-limit headers are learned from it).

    >>> ep = resolve("openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    >>> complete(ep, [{"role": "user", "content": "hi"}], timeout=1)
    Traceback (most recent call last):
    ...
    greenagents.errors.ConnectionFailed: openai: could not connect to http://127.0.0.1:9 \
(connection refused); is the server running? check OPENAI_BASE_URL
    """
    provider = endpoint.provider
    request = provider.build(endpoint.model, messages, schema=schema, schema_name=schema_name,
                             temperature=temperature, max_tokens=max_tokens, tools=tools)
    url, body = request.url, transport.dumps(request.body)
    headers = {**http.JSON_HEADERS, **request.headers}
    del request  # its body's dicts and lists are not kept (and GC-tracked) while the answer is awaited
    # http.request, not post_json: one frame less under every call's socket wait
    response = http.request("POST", url, body, headers, timeout=timeout,
                            provider=provider.name, hint=f"check {provider.base_url_env}")
    if on_response is not None:
        on_response(response)
    return provider.parse(response)
