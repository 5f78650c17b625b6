"""Typed agents: a small class whose ``prompt`` signature is its input schema.

Calling an agent is plain synchronous code — inputs validated, messages built, the model asked,
the answer validated — so it becomes concurrent inside :func:`greenagents.batch` with no change::

    from pydantic import BaseModel
    import greenagents as ga

    class Sentiment(BaseModel):
        label: Literal["positive", "negative", "neutral"]
        confidence: float

    class SentimentAgent(ga.Agent):
        model = "openai/gpt-4o-mini"
        instructions = "Classify the sentiment of the text."
        output = Sentiment

        def prompt(self, text: str) -> str:
            return text

    SentimentAgent.call(text="I love this!")            # -> Result[Sentiment], never raises
    SentimentAgent.run(text="I love this!")             # -> Sentiment, or raises
    ga.batch([(SentimentAgent, {"text": t}) for t in texts])

A call that fails is a :class:`~greenagents.Result` holding the error; bad inputs are an
:class:`~greenagents.errors.InputError` naming the field, found before any request is sent.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError, create_model

from . import breakers, budgets, definition, hooks, limits, pricing, providers, runtime, toolloop, tracking
from . import learned_limits as learned
from .cache import Entry, call_through
from .cache import enabled as cache_enabled
from .config import settings
from .errors import ConfigError, InputError, RateLimited, scrub
from .errors import Timeout as CallTimeout
from .result import Attempt, Result, ToolCall, Usage, target_name
from .retry import Policy, RetryPolicy, policy_for, with_fallbacks
from .streaming import Stream
from .structured import InvalidOutput, OutputSpec

if TYPE_CHECKING:
    from .batchjobs import Job
    from .client import Client

__all__ = ["Agent"]

Message = dict[str, Any]
A = TypeVar("A", bound="Agent")


class _Inputs:
    """The input schema of one agent class, read once from its ``prompt`` signature."""

    def __init__(self, agent: type[Agent]):
        self.agent = agent.__qualname__
        self.signature = inspect.signature(agent.prompt)
        hints = get_type_hints(agent.prompt)
        fields: dict[str, Any] = {}
        for name, param in list(self.signature.parameters.items())[1:]:  # skip self
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"{agent.__qualname__}.prompt takes *{name}: name each input "
                                "instead (the signature is the input schema)")
            default = ... if param.default is param.empty else param.default
            fields[name] = (hints.get(name, Any), default)
        self.model: type[BaseModel] = create_model(f"{agent.__name__}Inputs", **fields)
        self.names = frozenset(self.model.model_fields)

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not self.names.issuperset(kwargs):
            unknown = sorted(set(kwargs) - self.names)
            raise InputError(f"{self.agent}.call(): unknown input(s) {unknown}; inputs are "
                             f"{list(self.model.model_fields)}")
        arguments = kwargs
        if args:  # binding is only needed to name positional inputs (and costs ~20 µs)
            try:
                bound = self.signature.bind(None, *args, **kwargs)
            except TypeError as exc:
                raise InputError(f"{self.agent}.call(): {exc}; inputs are "
                                 f"{list(self.model.model_fields)}") from None
            del bound.arguments[next(iter(self.signature.parameters))]
            arguments = bound.arguments
        try:
            checked = self.model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(f"input '{'.'.join(map(str, e['loc']))}': {e['msg']}"
                                 for e in exc.errors())
            raise InputError(f"{self.agent}.call(): {problems}") from None
        return dict(checked.__dict__)  # the fields' values (a model of fields only)


class _Call:
    """The state of one agent call across turns, attempts, re-asks and fallback models."""

    def __init__(self, agent: type[Agent], messages: list[Message],
                 tools: Sequence[dict[str, Any]] = ()):
        self.agent = agent
        self.messages = messages
        self.spec = agent._output_spec()
        self.tools = tools              # offered on every turn (specs: name, description, ...)
        self.finishing = False          # the work is done: ask for the output, run no more tools
        self.turn = 1
        self.model: str | None = None
        self.usage_by_model: dict[str, Usage] = {}
        self.history: list[Attempt | ToolCall] = []
        self.started = time.monotonic()
        self.reask: InvalidOutput | None = None
        self.text = ""  # the answer that validated, kept for the cache

    def attempt(self, model: str, endpoint: providers.Endpoint, deadline: float | None) -> Any:
        """One request: the validated output, or (tool loop) the Completion to act on.

        Every feature around the request that is off costs one check: hooks and budgets here,
        rate limits and cooldowns, learned limits and breakers at the top of their functions.
        """
        agent = self.agent
        timeout = settings().timeout if agent.timeout is None else agent.timeout
        until = None if deadline is None else self.started + deadline
        messages = self.messages + OutputSpec.reask(self.reask) if self.reask else self.messages
        working = bool(self.tools) and not self.finishing
        # a provider that cannot offer tools and ask for the output at once gets it asked last
        withheld = working and not endpoint.provider.structured_with_tools
        start = time.monotonic()
        number = self.attempts + 1
        provider = endpoint.provider.name
        scope, breaker = endpoint.scopes
        completion = None
        probe = False
        sent, cut_short = False, False  # what the breaker may learn from how this attempt ends
        error: BaseException | None = None
        if hooks.active:
            hooks.attempt_started(number, provider, model, messages)
        spends = budgets.active()
        try:
            probe = breakers.before(breaker, start)
            reserved = budgets.reserve(spends, model, messages, agent.max_tokens) if spends else None
            try:
                # cooldowns and rate limits first: their waits count against the deadline
                limits.before_request(provider, scope, model, messages, until=until)
                ticket = learned.before_request(provider, breaker, model, messages,
                                                max_tokens=agent.max_tokens, until=until)
                if until is not None:
                    cut_short = until - time.monotonic() < timeout
                    timeout = min(timeout, until - time.monotonic())
                    if timeout <= 0:
                        raise CallTimeout(f"{agent.__qualname__}: its retry deadline of "
                                          f"{deadline}s passed; raise Retry(deadline=...)")
                sent = True
                completion = providers.complete(
                    endpoint, messages, schema=None if withheld else self.spec.schema,
                    schema_name=self.spec.name, temperature=agent.temperature,
                    max_tokens=agent.max_tokens, timeout=timeout, tools=self.tools,
                    on_response=ticket.observe)
            finally:
                if reserved is not None:  # what the provider billed, if it answered
                    budgets.settle(spends, reserved, model,
                                   *(() if completion is None else (completion.usage,)))
            breakers.after(breaker, None, probe, start)
            limits.observe(scope, limited=False)
            usage = self.usage_by_model.get(model)
            self.usage_by_model[model] = completion.usage if usage is None \
                else usage + completion.usage
            if working and (completion.tool_calls or (withheld and self.spec.schema)):
                return completion
            value = self.spec.parse(completion.text)
            self.text = completion.text
        except BaseException as exc:
            error = exc
            if not isinstance(exc, InvalidOutput):  # an answer that did not validate: reported
                # no request, or a timeout cut short by the call's deadline: not the endpoint's
                evidence = sent and not (cut_short and isinstance(exc, CallTimeout))
                breakers.after(breaker, exc, probe, start, evidence=evidence)
            if isinstance(exc, RateLimited):
                limits.observe(scope, limited=True, retry_after=exc.retry_after)
            if isinstance(exc, InvalidOutput):
                self.reask = exc
            raise
        finally:
            attempt = Attempt(number, model, None if error is None else getattr(error, "status", None),
                              None if error is None else type(error).__name__,
                              time.monotonic() - start, 0.0, self.turn)
            self.history.append(attempt)
            if hooks.active:
                hooks.attempt_ended(attempt, provider, completion, error)
        return value

    def answer(self, endpoints: list[tuple[str, providers.Endpoint]], policy: Policy) -> Any:
        """One turn: the model's answer, with retries, then each fallback model in order.

        The first attempt on the first model is made here, straight: most calls need no other,
        and tenacity and the fallbacks take over only once it failed (see
        :meth:`retry.Attempts.run`), so the frames between a call and its socket stay few.
        """
        started = time.monotonic()
        failed = None
        if policy.tries_first:
            model, endpoint = endpoints[0]
            self._trying(model)
            try:
                return self.attempt(model, endpoint, policy.deadline)
            except Exception as exc:  # kills and the caller's timeouts are BaseException: pass
                failed = exc
        return with_fallbacks(endpoints, functools.partial(self._attempt, policy.deadline), policy,
                              on_wait=self.waited, on_model=self._trying, failed=failed,
                              started=started if failed is not None else None)

    def _attempt(self, deadline: float | None, model: str, endpoint: providers.Endpoint) -> Any:
        return self.attempt(model, endpoint, deadline)

    def ask(self, result: Result[Any], toolbox: toolloop.Toolbox, inputs: dict[str, Any],
            endpoints: list[tuple[str, providers.Endpoint]], policy: Policy) -> bool:
        """The call itself: its value (or error) into ``result``; whether it answered."""
        try:
            result.value = toolloop.run(self, toolbox, inputs, endpoints, policy) \
                if toolbox.specs else self.answer(endpoints, policy)
        except Exception as exc:  # kills and the caller's timeouts are BaseException: pass
            result.error = exc
            return False
        return True

    def ask_cached(self, *ask: Any) -> Entry | None:
        """:meth:`ask`, its answer as a cache entry when it validated (None when it failed)."""
        if not self.ask(*ask):
            return None
        usage, model = self.usage, self.model or ""
        return Entry(self.text, model, usage.prompt_tokens, usage.completion_tokens,
                     self.cost(model))

    def _trying(self, model: str) -> None:
        self.reask = None  # a fallback model starts from the conversation so far
        self.model = model

    @property
    def attempts(self) -> int:
        return sum(isinstance(entry, Attempt) for entry in self.history)

    @property
    def usage(self) -> Usage:
        by_model = self.usage_by_model
        if len(by_model) == 1:
            return next(iter(by_model.values()))
        return sum(by_model.values(), Usage())

    def cost(self, model: str) -> float | None:
        """USD over every model asked; None when any of their prices is unknown."""
        costs = [pricing.cost_usd(m, u) for m, u in (self.usage_by_model or {model: Usage()}).items()]
        return None if None in costs else sum(c for c in costs if c is not None)

    def waited(self, seconds: float) -> None:
        last = self.history[-1]
        if isinstance(last, Attempt):
            self.history[-1] = dataclasses.replace(last, wait_s=seconds)


class Agent:
    """Base class of agents; subclass it and set the class attributes below.

    ``model`` is ``"provider/name"`` (default: ``ga.settings().default_model``), ``output`` is
    ``str`` or a pydantic model (structured output), ``retries`` an int, a :class:`ga.Retry` or a
    ``tenacity.Retrying``, ``fallbacks`` models to try in order once retries on the previous one
    are exhausted, ``base_url`` any OpenAI-compatible server. ``timeout`` bounds each attempt,
    whole (connect to last byte); ``Retry(deadline=...)`` bounds the call, waits included.
    ``model`` and ``timeout`` are checked when the class is defined (a ConfigError).

    Tools (see :mod:`greenagents.tools`): ``tools`` are functions (or ``ga.tool(...)``, or methods
    of the class) the model may call; each turn's calls run concurrently, ``tool_concurrency`` at
    once, each within ``tool_timeout`` seconds; past ``max_turns`` model turns the call fails with
    :class:`~greenagents.errors.ToolLoopError`. A failing tool's error goes back to the model as
    its result (``tool_errors = "return"``) or fails the call (``"raise"``).
    """

    model: ClassVar[str | None] = None
    instructions: ClassVar[str] = ""
    output: ClassVar[Any] = str
    temperature: ClassVar[float | None] = None
    max_tokens: ClassVar[int | None] = None
    timeout: ClassVar[float | None] = None
    first_token_timeout: ClassVar[float | None] = None  # streams: per attempt; default timeout
    retries: ClassVar[RetryPolicy] = None
    fallbacks: ClassVar[Sequence[str | tuple[str, str]]] = ()
    base_url: ClassVar[str | None] = None
    tools: ClassVar[Sequence[Any]] = ()
    cache: ClassVar[bool | float | None] = None
    max_turns: ClassVar[int] = 8
    tool_concurrency: ClassVar[int] = 8
    tool_timeout: ClassVar[float | None] = 60.0
    tool_errors: ClassVar[Literal["return", "raise"]] = "return"
    # per-class caches, filled on first call (looked up in the class's own __dict__)
    _greenagents_inputs: ClassVar[_Inputs]
    _greenagents_output: ClassVar[OutputSpec]
    _greenagents_tools: ClassVar[toolloop.Toolbox]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        definition.check(cls)  # a definition that cannot work fails here, naming the attribute

    @classmethod
    def with_options(cls: type[A], **options: Any) -> type[A]:
        """A subclass with these class attributes replaced (``model``, ``timeout``, ``base_url``...).

        >>> class Echo(Agent):
        ...     model = "openai/gpt-4o-mini"
        >>> Echo.with_options(model="anthropic/claude-haiku-4-5", timeout=10).model
        'anthropic/claude-haiku-4-5'
        """
        return definition.configured(cls, options)  # type: ignore[return-value]

    @classmethod
    def batch(cls, inputs: Iterable[dict[str, Any]], *, client: Client | None = None,
              **options: Any) -> list[Result[Any]]:
        """Call the agent once per dict of inputs, concurrently; Results in input order.

        ``options`` are those of :func:`greenagents.batch` (``max_concurrent``, ``timeout``...);
        ``client=`` runs the calls with that :class:`~greenagents.Client` (else the active one).
        """
        run = runtime.batch if client is None else client.batch
        if isinstance(inputs, Sized):  # a wrong item is an InputError now, before any call
            return run([(cls, _as_inputs(cls, item)) for item in inputs], **options)
        return run(((cls, item) for item in inputs), **options)  # lazily: per item

    @classmethod
    def each(cls, items: Iterable[Any], *, client: Client | None = None,
             **options: Any) -> list[Result[Any]]:
        """Call the agent once per item, passed as its (first) input; Results in input order.

        ``options`` are those of :func:`greenagents.each`; ``client=`` as in :meth:`batch`.
        """
        return (runtime.each if client is None else client.each)(items, cls, **options)

    def prompt(self, input: str) -> str | list[Message]:
        """The user message (or a list of messages) for these inputs; override it.

        Its parameters, with their type hints and defaults, are the agent's inputs.
        """
        return input

    @classmethod
    def _inputs(cls) -> _Inputs:
        cached = cls.__dict__.get("_greenagents_inputs")
        if cached is None:
            cached = _Inputs(cls)
            cls._greenagents_inputs = cached
        return cached

    @classmethod
    def _output_spec(cls) -> OutputSpec:
        cached = cls.__dict__.get("_greenagents_output")
        if cached is None or cached.output is not cls.output:
            cached = OutputSpec(cls.output)
            cls._greenagents_output = cached
        return cached

    @classmethod
    def _toolbox(cls) -> toolloop.Toolbox:
        cached = cls.__dict__.get("_greenagents_tools")
        if cached is None or cached.source is not cls.tools:
            cached = toolloop.Toolbox(cls)
            cls._greenagents_tools = cached
        return cached

    @classmethod
    def _messages(cls, inputs: dict[str, Any]) -> list[Message]:
        prompted = cls().prompt(**inputs)
        messages: list[Message] = [{"role": "system", "content": cls.instructions}] \
            if cls.instructions else []
        if isinstance(prompted, str):
            return [*messages, {"role": "user", "content": prompted}]
        if isinstance(prompted, list) and all(isinstance(m, dict) and "role" in m for m in prompted):
            return messages + prompted
        raise ConfigError(f"{cls.__qualname__}.prompt returned {type(prompted).__name__}; return a "
                        "string or a list of {'role': ..., 'content': ...} messages")

    @classmethod
    def _endpoints(cls) -> list[tuple[str, providers.Endpoint]]:
        """The primary model and its fallbacks, resolved (a missing key fails here, early).

        ``base_url`` applies to the primary model and to fallbacks of the same provider; a
        fallback may carry its own as ``("provider/model", base_url)``.
        """
        primary = cls.model or settings().default_model
        chain: list[tuple[str, str | None]] = [(primary, cls.base_url)]
        for fallback in cls.fallbacks:
            if isinstance(fallback, str):
                same = fallback.partition("/")[0] == primary.partition("/")[0]
                chain.append((fallback, cls.base_url if same else None))
            else:
                chain.append((fallback[0], fallback[1]))
        return [(model, providers.resolve(model, base_url=url)) for model, url in chain]

    @classmethod
    def call(cls, *args: Any, **inputs: Any) -> Result[Any]:
        """Run the agent once; a :class:`~greenagents.Result`, never an exception for a failure."""
        return cls.__greenagents_call__(args, inputs)

    @classmethod
    def __greenagents_call__(cls, args: tuple[Any, ...], inputs: dict[str, Any]) -> Result[Any]:
        """How a run calls an agent class: :meth:`call`, its Result kept whole. The inputs come
        packed, so the run calls this without unpacking them: ``f(*args, **kwargs)`` is a C-level
        call in CPython 3.11, whose frame every waiting call would keep (~0.5 KB of saved stack)."""
        started = time.perf_counter()
        result: Result[Any] = Result(target=target_name(cls), attempts=0)
        call = hooks.call_opened(result.target, cls, agent=True) if hooks.active else None
        try:
            checked = cls._inputs().validate(args, inputs)
            messages = cls._messages(checked)
            endpoints = cls._endpoints()
            policy = policy_for(cls.retries)
            toolbox = cls._toolbox()
            state = _Call(cls, messages, toolbox.specs)
        except Exception as exc:  # bad inputs, config, a bug in prompt(): this call's error only
            result.error = scrub(exc)
            result.duration_s = time.perf_counter() - started
            hooks.call_closed(call, result)
            tracking.record(result, inputs)
            return result

        hit: Entry | None = None
        try:
            if cache_enabled(cls):
                hit = call_through(cls, messages, endpoints, state.spec.schema, toolbox.specs,
                                         functools.partial(state.ask_cached, result, toolbox,
                                                           checked, endpoints, policy))
                if hit is not None:
                    result.value, result.error = state.spec.parse(hit.text), None
                    state.model, result.cached = hit.model, True
            else:  # straight: no frames of the cache's between the call and its request
                state.ask(result, toolbox, checked, endpoints, policy)
        except Exception as exc:  # a bad cache setting: this call's error, not the batch's
            result.error = exc
        if result.error is not None:  # the one redaction step before the error leaves
            result.error = scrub(result.error, *(endpoint.api_key for _, endpoint in endpoints))
        result.model = state.model
        result.attempts = state.attempts
        result.history = tuple(state.history)
        if hit is not None:
            result.usage, result.cost_usd = Usage(hit.prompt_tokens, hit.completion_tokens), 0.0
        else:
            result.usage, result.cost_usd = state.usage, state.cost(result.model or "")
        result.duration_s = time.perf_counter() - started
        hooks.call_closed(call, result)
        tracking.record(result, inputs)
        return result

    @classmethod
    def stream(cls, *args: Any, **inputs: Any) -> Stream[Any]:
        """Run the agent once, its answer as it is generated (see :mod:`greenagents.streaming`);
        an agent with ``tools`` runs its tool loop, each turn streamed, the last one's text to you.

        >>> import greenagents.monkey
        >>> from greenagents.testing import Simulator
        >>> with Simulator() as sim:
        ...     class Echo(Agent):
        ...         model, base_url = "openai/m", sim.base_url
        ...     stream = Echo.stream("hi")
        ...     deltas = list(stream)
        >>> deltas[-1], stream.result.value == "".join(deltas)
        ('"hi".', True)
        """
        result: Result[Any] = Result(target=target_name(cls), attempts=0)
        try:
            checked = cls._inputs().validate(args, inputs)
            messages = cls._messages(checked)
            endpoints = cls._endpoints()
            policy = policy_for(cls.retries)
            toolbox = cls._toolbox()
            state = _Call(cls, messages, toolbox.specs)
            loop = toolloop.Loop(state, toolbox, checked, endpoints) if toolbox.specs else None
        except Exception as exc:  # the stream raises it when read; its Result holds it
            result.error = scrub(exc)
            return Stream(cls, result, inputs)
        return Stream(cls, result, inputs, state, endpoints, policy, loop)

    @classmethod
    def run(cls, *args: Any, **inputs: Any) -> Any:
        """Run the agent once and return its output, or raise its error."""
        return cls.call(*args, **inputs).unwrap()

    @classmethod
    def submit_batch(cls, inputs: Iterable[Mapping[str, Any]], **options: Any) -> Job:
        """Send one call per ``inputs`` item through the provider's Batch API (half price, within
        24 h); see :func:`greenagents.submit_batch` for ``options``."""
        from .batchjobs import submit_batch  # the batch layer builds on agents, not the reverse

        return submit_batch([(cls, item) for item in inputs], **options)

def _as_inputs(agent: type[Agent], item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InputError(f"{agent.__qualname__}.batch() takes dicts of inputs, got {item!r:.60}; "
                         f"e.g. {agent.__qualname__}.batch([{{'text': 'hi'}}]) (or use "
                         f"{agent.__qualname__}.each(items) for one input per item)")
    return item
