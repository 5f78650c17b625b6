"""``ga.Client``: settings, connection pools, rate limits, execution log, cache and budget, owned together.

In the manner of ``requests.Session``: the module functions (``ga.batch``, ``ga.configure``,
``ga.rate_limit``...) act on a default client, and a :class:`Client` of your own holds its own of
everything — so two tenants with their own API keys, rate limits, logs and budgets can share one
process (a gunicorn app serving several customers) and share nothing they should not::

    tenant_a = ga.Client(api_keys={"openai": key_a}, tracking="sqlite:///a.db", max_cost_usd=5)
    tenant_a.rate_limit("openai", rpm=500)
    results = tenant_a.batch([(SentimentAgent, {"text": t}) for t in texts])
    result = tenant_a.call(SentimentAgent, text="hi")       # one call: its Result
    SentimentAgent.batch(inputs, client=tenant_a)          # an agent's own verbs take client=

    with ga.Client(max_concurrency=100) as client:        # active in the block, closed at its end
        SentimentAgent.batch(inputs)                       # ... so this uses it too

What a client owns (each module keeps its part in the client's :mod:`greenagents.state`): its
:class:`~greenagents.Settings` (defaults, then ``GREENAGENTS_*``, then the arguments), its HTTP pools,
its rate limits and 429 cooldowns, its execution-log writers, its cache stores and calls in flight,
its ``max_cost_usd`` budget and its circuit-breaker evidence. What stays process-wide: the
monkey-patching, the hooks and the integrations they feed (``otel``, ``prometheus``,
``log_calls``: set them with ``ga.configure``), the price table, and anything in a shared store
(two clients naming the same Redis share what is in it, as two processes would).

Pitfall: a client is active where its calls run — inside ``with client:`` / ``client.use()``, its
own verbs, and the greenlets and threads those start (each call runs in a copy of its caller's
``contextvars``). A thread you start yourself starts with an empty context, so it sees the default
client: use the client's verbs there, or ``with client.use():``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from . import config, runtime, state, tracking
from .calls import run_call
from .result import Result

if TYPE_CHECKING:
    import gevent

    from .config import Settings
    from .limits import RateLimit
    from .streaming import Stream

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Settings and everything that remembers: pools, rate limits, log, cache, budget, breakers.

    ``Client(**settings)`` takes the fields of :class:`~greenagents.Settings` (the defaults and
    ``GREENAGENTS_*`` variables fill the rest); ``api_keys`` and ``base_urls`` (per provider) are
    what a tenant usually brings. The verbs are the module's — :meth:`batch`, :meth:`each`,
    :meth:`stream`, :meth:`spawn` — plus :meth:`call` and :meth:`run` for one call. ``repr`` never
    shows a key.

    >>> import greenagents as ga
    >>> client = ga.Client(api_keys={"openai": "sk-tenant-a"}, max_concurrency=5)
    >>> client
    Client(max_concurrency=5, api_keys={'openai': '***'})
    >>> [r.value for r in client.each([1, 2, 3], lambda n: n * 10)]
    [10, 20, 30]
    >>> client.settings.max_concurrency, client.settings.max_concurrency == ga.settings().max_concurrency
    (5, False)
    >>> client.close()
    """

    def __init__(self, **settings: Any) -> None:
        # Without arguments the environment is read on first use, as for the default client.
        self._state = state.State(config.settings_for_client(settings) if settings else None)

    @classmethod
    def default(cls) -> Client:
        """The default client: the one ``ga.batch``, ``ga.configure``... act on outside any other.

        >>> import greenagents as ga
        >>> ga.Client.default().settings is ga.settings()
        True
        """
        client = cls.__new__(cls)
        client._state = state.default()
        return client

    @property
    def settings(self) -> Settings:
        """This client's :class:`~greenagents.Settings`."""
        with self.use():
            return config.settings()

    def configure(self, **changes: Any) -> Settings:
        """Change this client's settings, as :func:`greenagents.configure` does the default's."""
        with self.use():
            return config.configure(**changes)

    def rate_limit(self, provider: str, **budget: Any) -> RateLimit:
        """This client's rpm/tpm budget for ``provider``; arguments of :func:`greenagents.rate_limit`.

        >>> import greenagents as ga
        >>> ga.Client().rate_limit("openai", rpm=60)
        RateLimit('openai', rpm=60, tpm=None, storage='memory://')
        """
        from . import limits  # lazily: the limits library imports ssl, which waits for the patch

        with self.use():
            return limits.rate_limit(provider, **budget)

    @contextmanager
    def use(self) -> Iterator[Client]:
        """Make this client the active one in the block, without closing it at the end (``with
        client:`` closes): the module functions and agents' own verbs in it use this client.

        >>> import greenagents as ga
        >>> client = ga.Client(retries=0)
        >>> with client.use():
        ...     ga.settings().retries
        0
        """
        with state.using(self._state):
            yield self

    # the verbs of greenagents.runtime, run with this client active

    def batch(self, calls: Iterable[Any], **options: Any) -> list[Result[Any]]:
        """:func:`greenagents.batch` with this client: one Result per call, in input order."""
        with self.use():
            return runtime.batch(calls, **options)

    def each(self, items: Iterable[Any], fn: Callable[[Any], T], **options: Any) -> list[Result[T]]:
        """:func:`greenagents.each` with this client: ``fn(item)`` for every item."""
        with self.use():
            return runtime.each(items, fn, **options)

    def stream(self, calls: Iterable[Any] | type, /, *args: Any, **options: Any) -> Any:
        """:func:`greenagents.stream` with this client: each Result as it completes.

        Given an agent class instead, ``client.stream(SummaryAgent, text=doc)`` is
        :meth:`Agent.stream <greenagents.Agent.stream>` with this client: the answer's deltas,
        then ``.result``. Either belongs to this client wherever it is read.
        """
        if isinstance(calls, type) and hasattr(calls, "__greenagents_call__"):
            with self.use():
                made: Stream[Any] = calls.stream(*args, **options)  # type: ignore[attr-defined]
                return made
        with self.use():
            results = runtime.stream(calls, **options)  # type: ignore[arg-type]
        return self._read(results)

    def _read(self, results: Iterator[Result[Any]]) -> Iterator[Result[Any]]:
        """``results`` advanced with this client active, and never across a ``yield``: the
        caller's context must not see the client between two Results."""
        try:
            while True:
                with self.use():
                    result = next(results, None)
                if result is None:
                    return
                yield result
        finally:
            with self.use():
                results.close()  # type: ignore[attr-defined]  # stops the calls still running

    def spawn(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> gevent.Greenlet[Any, T]:
        """:func:`greenagents.spawn` with this client: one greenlet; ``.get()`` it."""
        with self.use():
            return runtime.spawn(fn, *args, **kwargs)

    def call(self, target: Callable[..., Any], /, *args: Any, **inputs: Any) -> Result[Any]:
        """One call with this client: its :class:`~greenagents.Result`, never an exception for a
        failure — :meth:`Agent.call <greenagents.Agent.call>` for an agent class, any other
        callable run here as a batch runs each of its calls (:func:`greenagents.calls.run_call`).

        >>> import greenagents as ga
        >>> ga.Client().call(divmod, 7, 2).value
        (3, 1)
        """
        with self.use():
            agent_call = getattr(target, "__greenagents_call__", None)
            if agent_call is not None:
                result: Result[Any] = agent_call(args, inputs)
                return result
            return run_call(target, args, inputs)

    def run(self, target: Callable[..., T], /, *args: Any, **inputs: Any) -> T:
        """One call with this client: its value, or its error raised (:meth:`Agent.run
        <greenagents.Agent.run>`'s convention).

        >>> import greenagents as ga
        >>> ga.Client().run(pow, 2, 10)
        1024
        """
        value: T = self.call(target, *args, **inputs).unwrap()
        return value

    # lifetime

    def flush(self, timeout: float | None = None) -> bool:
        """Write every execution-log row this client queued; False if ``timeout`` passed first."""
        return self._state.part(tracking.Writers).flush(timeout)

    def close(self) -> None:
        """Write the queued log rows, stop the log writers and close the HTTP pools.

        The client stays usable (pools and writers reopen on next use) and keeps its settings,
        rate limits and budget, as ``requests.Session`` does after ``close()``.
        """
        self._state.close()

    def reset(self) -> None:
        """Close, then forget everything: settings (back to the defaults and the environment),
        rate limits, cooldowns, budget, breaker evidence. What a test starts from
        (``tests/conftest.py`` resets the default client around each test).

        >>> import greenagents as ga
        >>> client = ga.Client(retries=0)
        >>> client.reset()
        >>> client.settings.retries
        3
        """
        self._state.reset()
        with self.use():
            config.settings()  # read now: the default client's integrations follow at once

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Client) and other._state is self._state

    def __hash__(self) -> int:
        return id(self._state)

    def __enter__(self) -> Client:
        state.enter(self._state)
        return self

    def __exit__(self, *exc_info: object) -> None:
        state.leave()
        self.close()

    def __repr__(self) -> str:
        shown = []
        for name, value in self.settings:
            if value == type(self.settings).model_fields[name].get_default(call_default_factory=True):
                continue
            if name == "api_keys":
                value = dict.fromkeys(value, "***")
            shown.append(f"{name}={value!r}")
        return f"Client({', '.join(shown)})"

