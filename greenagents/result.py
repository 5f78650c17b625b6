"""What one call produced: a :class:`Result`, success or failure, never an exception in flight.

A batch of a thousand calls gives a thousand Results in input order; a failed call's error is held,
not raised, so one failure never sinks the others. :meth:`Result.unwrap` turns it back into an
exception when you want one.

>>> r = Result(index=0, target="len", value=3)
>>> r.ok, r.unwrap()
(True, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Attempt", "Result", "ToolCall", "Usage", "call_target", "target_name"]

T = TypeVar("T")


@dataclass(frozen=True)
class Usage:
    """Tokens a call consumed, summed over every attempt and re-ask.

    >>> Usage(10, 5) + Usage(1, 1)
    Usage(prompt_tokens=11, completion_tokens=6)
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)


@dataclass(frozen=True)
class Attempt:
    """One try of a call, kept so a slow Result can say why it was slow.

    ``error`` is the exception's class name (``None`` when the attempt answered), ``status`` the HTTP
    status if any, ``wait_s`` the backoff slept *after* this attempt, ``model`` the model asked,
    ``turn`` the model turn it belongs to (tool-using agents take several, see :class:`ToolCall`).
    """

    number: int
    model: str | None = None
    status: int | None = None
    error: str | None = None
    duration_s: float = 0.0
    wait_s: float = 0.0
    turn: int = 1


@dataclass(frozen=True)
class ToolCall:
    """One tool call a tool-using agent ran, in :attr:`Result.history` after its turn's attempts.

    ``arguments`` (as the model sent them) and ``output`` are text with API keys masked and cut to
    a few KB; ``error`` is what the model was told instead of an output (``None`` when it ran).

    >>> ToolCall(turn=1, tool="get_weather", arguments='{"city": "Paris"}', output="sunny").ok
    True
    """

    turn: int
    tool: str
    arguments: str
    output: str | None = None
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Result(Generic[T]):
    """The outcome of one call. Exactly one per input, whatever happened.

    ``target`` names what was called (an agent class or a function, by qualified name); ``model`` is
    the model that finally answered, after fallbacks; ``history`` holds one :class:`Attempt` per try
    and, for tool-using agents, one :class:`ToolCall` per tool run, in order.
    ``cached`` marks an answer from the response cache: its ``usage`` is the original call's and
    its ``cost_usd`` is 0 (nothing was paid this time).
    """

    index: int | None = None
    target: str = ""
    value: T | None = None
    error: BaseException | None = None
    attempts: int = 1
    duration_s: float = 0.0
    usage: Usage | None = None
    cost_usd: float | None = None
    model: str | None = None
    cached: bool = False
    history: tuple[Attempt | ToolCall, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """True when the call returned a value (``error is None``)."""
        return self.error is None

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls this call ran (a tool-using agent's), in order."""
        return tuple(entry for entry in self.history if isinstance(entry, ToolCall))

    @property
    def tool_errors(self) -> int:
        """How many tool calls failed (raised, timed out, bad arguments, unknown tool)."""
        return sum(not call.ok for call in self.tool_calls)

    @property
    def turns(self) -> int:
        """Model turns taken: 1 for a plain agent, more when tools were called."""
        return max((entry.turn for entry in self.history), default=0)

    def unwrap(self) -> T:
        """The value, or raise the call's error (with its original traceback).

        >>> Result(error=ValueError("bad")).unwrap()
        Traceback (most recent call last):
        ...
        ValueError: bad
        """
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    def __repr__(self) -> str:
        outcome = f"value={self.value!r}" if self.ok else f"error={self.error!r}"
        return (f"Result(index={self.index}, target={self.target!r}, {outcome}, "
                f"attempts={self.attempts}, duration_s={self.duration_s:.3f}, model={self.model!r})")


def target_name(fn: Callable[..., Any]) -> str:
    """The qualified name a Result's ``target`` gives ``fn`` (``module.Class`` or ``module.function``).

    >>> target_name(Result), target_name(len)
    ('greenagents.result.Result', 'len')
    """
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def call_target(call: Any) -> str:
    """The target name of a call not run (timed out before it started): "" when it has none.

    >>> call_target((divmod, (7, 2), {})), call_target("junk")
    ('divmod', '')
    """
    return target_name(call[0]) if isinstance(call, tuple) and call else ""
