"""Tools: plain synchronous functions an agent's model may call, described by their signature.

A tool is any function — ``requests``, a database driver, a subprocess — with type hints. Its JSON
schema comes from the signature through pydantic (defaults, ``Literal``, nested models,
``Annotated[..., Field(description=...)]`` or ``Annotated[..., "a description"]``), its description
from the docstring, and the model's arguments are validated against the same pydantic model before
the function runs. A parameter annotated :class:`ToolContext` is filled in by greenagents and
hidden from the model::

    from typing import Annotated, Literal
    import greenagents as ga

    def get_weather(city: Annotated[str, "City name, e.g. Paris"],
                    unit: Literal["C", "F"] = "C") -> str:
        \"\"\"Current weather for a city.\"\"\"
        return requests.get(f"{WEATHER}/{city}", params={"unit": unit}, timeout=10).text

    class TravelAgent(ga.Agent):
        tools = (get_weather, ga.tool(search_flights, name="flights"))

>>> def add(a: int, b: int = 1) -> int:
...     '''Add two numbers.'''
...     return a + b
>>> t = tool(add)
>>> t.name, t.description, t.parameters["required"]
('add', 'Add two numbers.', ['a'])
>>> t.invoke('{"a": 2}', None)
'3'

Why pydantic and not a hand-written schema: the schema the model sees and the validation the
arguments pass are then one and the same, and every type pydantic knows is a valid argument type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError

__all__ = ["Tool", "ToolArgumentsError", "ToolContext", "tool"]


@dataclass(frozen=True)
class ToolContext:
    """What a tool may want to know about the call it serves; never shown to the model.

    Declare a parameter of this type (any name) and greenagents passes it: ``inputs`` are the
    agent call's validated inputs (a tenant id, a user...), ``agent`` the agent's qualified name,
    ``turn`` the model turn (1-based) and ``call_id`` the provider's id of this tool call.

    >>> def whoami(ctx: ToolContext) -> str:
    ...     return ctx.inputs["user"]
    >>> tool(whoami).invoke("{}", ToolContext(inputs={"user": "ada"}))
    'ada'
    """

    inputs: Mapping[str, Any] = field(default_factory=dict)
    agent: str = ""
    turn: int = 1
    call_id: str = ""


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool's signature; the message says how, for the model."""


def _described(hint: Any) -> Any:
    """``Annotated[T, "text"]`` as ``Annotated[T, Field(description="text")]`` (pydantic ignores
    bare strings in ``Annotated``; a model reads them)."""
    if get_origin(hint) is not Annotated:
        return hint
    texts = [e for e in get_args(hint)[1:] if isinstance(e, str)]
    if not texts:
        return hint
    return Annotated[hint, Field(description=" ".join(texts))]  # nested Annotated flattens


def _is_context(hint: Any) -> bool:
    """``ToolContext``, or ``ToolContext | None`` (a tool that also runs outside an agent)."""
    if get_origin(hint) in (Union, UnionType):
        return any(_is_context(arg) for arg in get_args(hint))
    return hint is ToolContext


class Tool:
    """One function offered to the model: ``name``, ``description``, ``parameters`` (JSON schema).

    Build it with :func:`tool` (or list the bare function in an agent's ``tools``). A function
    whose first parameter is ``self`` is a method of the agent class: the agent binds it to an
    instance per call (see :meth:`bound`).
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None):
        if not callable(fn):
            raise ConfigError(f"tool {fn!r} is not callable; pass a function (or ga.tool(fn))")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not self.name.replace("_", "a").replace("-", "a").isalnum() or len(self.name) > 64:
            raise ConfigError(f"tool name {self.name!r}: use letters, digits, '_' or '-' (at most "
                              "64), e.g. ga.tool(fn, name='get_weather')")
        self.description = description or inspect.cleandoc(fn.__doc__ or "") or self.name
        self.context_param: str | None = None
        self.is_method = False
        self.model = self._arguments_model()
        schema = self.model.model_json_schema()
        schema.pop("title", None)
        self.parameters: dict[str, Any] = schema

    def _arguments_model(self) -> type[BaseModel]:
        signature = inspect.signature(self.fn)
        try:
            hints = get_type_hints(self.fn, include_extras=True)
        except (NameError, TypeError) as exc:
            raise ConfigError(f"tool {self.name!r}: cannot read its type hints ({exc}); define "
                              "the types it names before the function") from None
        fields: dict[str, Any] = {}
        for position, (name, param) in enumerate(signature.parameters.items()):
            if position == 0 and name == "self":
                self.is_method = True
                continue
            hint = hints.get(name, param.annotation)
            if _is_context(hint):
                self.context_param = name
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"tool {self.name!r} takes *{name}: name each argument instead "
                                  "(the signature is the schema the model sees)")
            default = ... if param.default is param.empty else param.default
            fields[name] = (_described(Any if hint is param.empty else hint), default)
        # forbid extra keys: the model must learn a misspelt argument, not have it dropped
        return create_model(f"{self.name}_arguments", __config__=ConfigDict(extra="forbid"),
                            **fields)

    def spec(self) -> dict[str, Any]:
        """The provider-neutral definition sent to the model: name, description, parameters."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def bound(self, owner: object) -> Tool:
        """This tool with ``self`` bound to ``owner`` (for methods of an agent class)."""
        if not self.is_method:
            return self
        copy = object.__new__(Tool)
        copy.__dict__.update(self.__dict__)
        copy.fn = self.fn.__get__(owner)
        copy.is_method = False
        return copy

    def arguments(self, raw: str | Mapping[str, Any]) -> dict[str, Any]:
        """The validated keyword arguments for ``raw`` (JSON text or an object from the model).

        JSON text is parsed and validated in one pass (pydantic's ``model_validate_json``, its
        mode for JSON input): about a third of the CPU of ``json.loads`` then ``model_validate``.
        """
        try:
            if isinstance(raw, str):
                checked = self.model.model_validate_json(raw or "{}")
            elif isinstance(raw, Mapping):
                checked = self.model.model_validate(raw)
            else:
                raise ToolArgumentsError(_NOT_AN_OBJECT)
        except ValidationError as exc:
            raise _arguments_error(exc) from None
        return dict(checked.__dict__)  # the fields' values: a model of fields only

    def invoke(self, raw: str | Mapping[str, Any], context: ToolContext | None) -> str:
        """Validate ``raw``, call the function, and return its result as text for the model.

        A string result is sent as is; anything else (a pydantic model, a dict, a dataclass...)
        as JSON. Raises :class:`ToolArgumentsError` or whatever the function raises.
        """
        kwargs = self.arguments(raw)
        if self.context_param is not None:
            kwargs[self.context_param] = context or ToolContext()
        return as_text(self.fn(**kwargs))

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, fn={getattr(self.fn, '__qualname__', self.fn)!r})"


_NOT_AN_OBJECT = "the arguments must be a JSON object matching the tool's schema"


def _arguments_error(exc: ValidationError) -> ToolArgumentsError:
    """What the model is told when its arguments do not validate: each problem by field."""
    problems = exc.errors()
    first = problems[0]
    if first["type"] == "json_invalid":
        return ToolArgumentsError(f"the arguments are not valid JSON ({first['msg']}); send a "
                                  "JSON object matching the tool's schema")
    if first["type"] == "model_type" and not first["loc"]:
        return ToolArgumentsError(_NOT_AN_OBJECT)
    listed = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(arguments)'}: {e['msg']}"
                       for e in problems)
    return ToolArgumentsError(f"invalid arguments: {listed}. Call it again with arguments "
                              "matching its schema.")


def as_text(value: Any) -> str:
    """A tool's return value as the text the model reads.

    >>> as_text("sunny"), as_text({"t": 21}), as_text(None)
    ('sunny', '{"t":21}', 'null')
    """
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value, fallback=str).decode()


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None) -> Any:
    """Make ``fn`` a :class:`Tool`, optionally renamed or re-described; also a decorator.

    ``ga.tool(fn)`` and listing ``fn`` in ``tools`` are the same; use this to set ``name`` or
    ``description`` (otherwise the function's name and docstring).

    >>> @tool(name="lookup")
    ... def find(term: str) -> str:
    ...     return term.upper()
    >>> find.name, find.invoke({"term": "x"}, None)
    ('lookup', 'X')
    """
    if fn is None:
        return lambda f: Tool(f, name=name, description=description)
    return Tool(fn, name=name, description=description)


def toolbox(entries: Any, owner: str) -> dict[str, Tool]:
    """An agent's ``tools`` (functions or :class:`Tool`\\ s) by name; a clash is a ConfigError."""
    if callable(entries) or isinstance(entries, (str, bytes)):
        raise ConfigError(f"{owner}.tools must be a tuple of functions, e.g. tools = (get_weather,)")
    found: dict[str, Tool] = {}
    for entry in entries:
        made = entry if isinstance(entry, Tool) else Tool(entry)
        if made.name in found:
            raise ConfigError(f"{owner}.tools has two tools named {made.name!r}; rename one with "
                              f"ga.tool(fn, name=...)")
        found[made.name] = made
    return found
