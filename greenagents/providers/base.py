"""What every provider shares: the :class:`Request` it builds, the :class:`Completion` it parses,
and the :class:`Provider` base that turns HTTP answers into one or the other of our errors.

Providers only translate (like httpx's protocol layer): ``build`` makes a :class:`Request` from
provider-neutral messages, ``parse`` makes a :class:`Completion` from an
:class:`~greenagents.http.HttpResponse`. Neither does I/O; :func:`greenagents.providers.complete`
joins them with :func:`greenagents.http.post_json`.

Messages are OpenAI-style: ``{"role": "system" | "user" | "assistant", "content": str | [part]}``
where a part is ``{"type": "text", "text": ...}`` or
``{"type": "image_url", "image_url": {"url": ...}}``; a tool loop adds OpenAI's assistant
``tool_calls`` and ``{"role": "tool", "tool_call_id": ..., "content": ...}`` messages (plus
``"is_error": True`` when the tool failed), which each provider translates to its own shape.
Tools are ``{"name", "description", "parameters"}``.

>>> Completion("hi", Usage(3, 1), "gpt-4o-mini", "stop").usage.total_tokens
4
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import transport
from ..errors import ProviderError, ServerError
from ..http import HttpResponse, raise_for_status
from ..result import Usage
from ..tokens import text_of

__all__ = ["Completion", "Message", "Provider", "Request", "ToolRequest", "ToolsWire", "error_code",
           "error_message", "text_of"]

Message = Mapping[str, Any]


@dataclass(frozen=True)
class Request:
    """One HTTP request to send: where, with which headers (secret: never shown), which JSON body.

    >>> Request("http://127.0.0.1:8000/v1/chat/completions", {"authorization": "Bearer k"}, {})
    Request(url='http://127.0.0.1:8000/v1/chat/completions', body={})
    """

    url: str
    headers: dict[str, str] = field(repr=False)
    body: dict[str, Any]


@dataclass(frozen=True)
class ToolRequest:
    """One tool call the model asked for: the provider's id, the tool's name, its arguments
    (JSON text from OpenAI, an object from Anthropic; validated by the tool, not here)."""

    id: str
    name: str
    arguments: str | dict[str, Any]


@dataclass(frozen=True)
class Completion:
    """The model's answer, provider-neutral.

    ``text`` is the answer's raw text, or for structured output the raw JSON text of the answer
    (validated by the caller, whichever provider produced it); ``model`` is what the provider
    reported; ``finish_reason`` is the provider's own word (``"stop"``, ``"end_turn"``, ``"length"``…);
    ``tool_calls`` the tools the model asked to run (empty for an answer).
    """

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    tool_calls: tuple[ToolRequest, ...] = ()


class ToolsWire:
    """A provider's ``tools`` array for a sequence of tool specs, made once per tuple of specs.

    A tool-using agent offers the same tuple (its class's, made once) on every turn of every
    call; converting it per request made a dozen small objects per turn that the garbage
    collector then walked. Lists and other sequences are converted each time (they may change).
    The result is shared by every request: copy it before adding to it.

    >>> wire = ToolsWire(lambda specs: [spec["name"] for spec in specs])
    >>> specs = ({"name": "a"},)
    >>> wire(specs) is wire(specs), wire([{"name": "b"}])
    (True, ['b'])
    """

    def __init__(self, convert: Callable[[Sequence[Mapping[str, Any]]], list[dict[str, Any]]]):
        self.convert = convert
        self.made: dict[int, tuple[Sequence[Mapping[str, Any]], list[dict[str, Any]]]] = {}

    def __call__(self, tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not isinstance(tools, tuple):
            return self.convert(tools)
        hit = self.made.get(id(tools))
        if hit is None or hit[0] is not tools:
            if len(self.made) > 256:  # tuples made afresh per call: stay bounded
                self.made.clear()
            hit = self.made[id(tools)] = (tools, self.convert(tools))
        return hit[1]


class Provider(ABC):
    """Translates between provider-neutral messages and one provider's wire format.

    An instance is bound to one endpoint: its ``base_url`` and ``api_key`` (never shown in
    ``repr``), ``key_env`` (the variable the key comes from, named in auth errors) and
    ``base_url_env`` (named when the server cannot be reached).

    >>> from greenagents.providers import OpenAIProvider
    >>> OpenAIProvider(api_key="sk-not-shown")
    OpenAIProvider(name='openai', base_url='https://api.openai.com/v1', key=set)
    """

    #: Whether a request can offer tools and ask for structured output at once (OpenAI's
    #: ``response_format``); if not, the agent asks for the output in one last turn.
    structured_with_tools = True

    def __init__(self, *, name: str, base_url: str, api_key: str | None = None,
                 key_env: str | None = None, base_url_env: str | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.key_env = key_env
        self.base_url_env = base_url_env

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, key={key})"

    @abstractmethod
    def build(self, model: str, messages: Sequence[Message], *, schema: dict[str, Any] | None = None,
              schema_name: str = "output", temperature: float | None = None,
              max_tokens: int | None = None, tools: Sequence[Mapping[str, Any]] = ()) -> Request:
        """The request asking ``model`` to answer ``messages`` (as JSON matching ``schema``),
        offering ``tools`` (``{"name", "description", "parameters"}``)."""

    @abstractmethod
    def _completion(self, payload: dict[str, Any]) -> Completion:
        """Read a successful answer's JSON; may raise KeyError/IndexError/TypeError on bad shape."""

    def parse(self, response: HttpResponse) -> Completion:
        """The :class:`Completion` in ``response``, or raise the matching ``ProviderError``.

        Non-2xx answers map through :func:`greenagents.http.raise_for_status`. A 2xx body that is
        not JSON (truncated, a proxy's HTML page) raises the retryable
        :class:`~greenagents.errors.ServerError`; JSON of the wrong shape raises a non-retryable
        :class:`~greenagents.errors.ProviderError`: usually the base URL is not this kind of server.
        """
        payload = self.checked(response)
        if payload is None:
            raise ServerError(f"{self.name} answered {response.status} with a body that is not "
                              f"valid JSON ({len(response.data)} bytes, maybe truncated); retrying "
                              "usually helps", status=response.status, provider=self.name)
        try:
            return self._completion(payload)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            where = f"check that {self.base_url_env} points at" if self.base_url_env else "is"
            raise ProviderError(f"{self.name} answered {response.status} without the expected "
                                f"fields (missing or malformed {exc!s}); {where} a {self.name}-"
                                "compatible API", status=response.status,
                                provider=self.name) from None

    def checked(self, response: HttpResponse) -> Any:
        """The JSON of a 2xx ``response`` (None if it is not JSON), or raise the matching
        ``ProviderError`` (the Batch APIs' control requests use it too)."""
        payload = self._json(response)
        if not 200 <= response.status < 300:
            message = error_message(payload)
            if message is None:
                message = response.data[:200].decode("utf-8", "replace") or None
            raise_for_status(response, provider=self.name, message=message,
                             code=error_code(payload), key_env=self.key_env, api_key=self.api_key)
        return payload

    @staticmethod
    def _json(response: HttpResponse) -> Any:
        try:
            return transport.loads(response.data)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
            return None


def error_code(payload: Any) -> str | None:
    """``payload["error"]["code"]``, else its ``type``: what kind of error the provider meant.

    >>> error_code({"error": {"message": "...", "type": "insufficient_quota", "code": None}})
    'insufficient_quota'
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code") or error.get("type")
    return str(code) if code else None


def error_message(payload: Any) -> str | None:
    """``payload["error"]["message"]``, the shape OpenAI and Anthropic share, or a string error.

    >>> error_message({"type": "error", "error": {"type": "x", "message": "overloaded"}})
    'overloaded'
    """
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        return str(message) if message else None
    if isinstance(error, str):
        return error
    message = payload.get("message")
    return str(message) if message else None
