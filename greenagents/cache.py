"""The response cache and in-flight dedupe: an identical call is answered once, then remembered.

Opt in per agent (``cache = True``, or a TTL in seconds) or for the whole process with
``ga.configure(cache="sqlite:///.greenagents/cache.db")`` (``"redis://host:6379/0"`` to share one
cache between Celery workers); an agent with ``cache = False`` opts out. ``greenagents run --cache``
turns it on for a run, so re-running a batch pays only for what changed::

    class SentimentAgent(ga.Agent):
        model = "openai/gpt-4o-mini"
        cache = 24 * 3600            # answers kept a day; True keeps them until evicted

A hit is a :class:`~greenagents.Result` with ``cached=True``, the original usage and ``cost_usd=0``;
no request is sent and no rate-limit budget is taken. Only validated answers are stored.

The key is a SHA-256 over everything that changes the answer: each (provider, base URL, model) of
the fallback chain, every message (system prompt included; images by content, since the hash covers
their bytes), the output schema, the tools' specs (a hit skips the tool loop and its side
effects), the sampling options (temperature, max_tokens, and any of
``_SAMPLING`` an agent sets) and the namespace (``cache_namespace`` setting: one tenant's answers are
never another's). The API key is not in it: two keys of one account get the same answers.

Dedupe: while a call with a key runs, identical calls in this process wait for it instead of sending
their own — 1,000 identical calls at once send one request. A waiting call shares the leader's
answer only; if the leader failed, each waiter sends its own request (a failure is not an answer).
Dedupe exists only where caching is on, so sampling one prompt N times on purpose still sends N.
With a Redis cache it spans processes too: the process whose call leads takes a lease on the key
in Redis (``SET NX``, for ``timeout`` seconds), and an identical call in another process waits
for the answer to appear in the cache, or for the lease to go (the leader failed or died: then
it leads itself).

Each :class:`~greenagents.Client` has its own stores and calls in flight (:class:`Caches`, its part
of :mod:`greenagents.state`): one tenant's call never waits for, nor shares, another's answer.

Pitfall: ``sqlite3`` blocks in C where gevent cannot switch; in a patched process every store read
and write runs in gevent's thread pool, so a slow disk parks one greenlet, not the hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import state
from .config import settings
from .errors import ConfigError
from .patching import available

if TYPE_CHECKING:
    from .providers import Endpoint

__all__ = ["DEFAULT_URL", "CacheWarning", "Entry", "Lease", "RedisStore", "SQLiteStore", "Store",
           "call_through", "enabled", "key_for", "lease", "store_for"]

#: Where ``cache=True`` keeps answers when no ``cache`` setting names a store.
DEFAULT_URL = "sqlite:///.greenagents/cache.db"

# Agent attributes that change the answer when set; read with getattr so options added later
# (tools, top_p...) are keyed as soon as an agent has them.
_SAMPLING = ("temperature", "max_tokens", "top_p", "seed", "stop", "tool_choice",
             "reasoning_effort")

T = TypeVar("T")


class CacheWarning(RuntimeWarning):
    """The cache store could not be read or written; calls went to the provider instead."""


@dataclass(frozen=True)
class Entry:
    """One stored answer: the validated text and what it cost when it was first paid for."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None

    def dumps(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Entry:
        return cls(**json.loads(raw))


class Store(Protocol):
    """Where entries live: ``get`` a key's bytes (None if absent or expired), ``set`` with a TTL."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float | None) -> None: ...


def _off_hub(fn: Callable[[], T]) -> T:
    """Run a blocking C call where it cannot stall the event loop (see the module's pitfall)."""
    if available():
        import gevent

        return gevent.get_hub().threadpool.apply(fn)
    return fn()


class SQLiteStore:
    """A cache file in WAL mode; one short-lived connection per operation, on a pool thread.

    >>> import tempfile, os
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "cache.db"))
    >>> store.set("k", b"v", ttl=None); store.get("k")
    b'v'
    """

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        _off_hub(self._create)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def _create(self) -> None:
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            connection.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, "
                               "value BLOB NOT NULL, expires REAL)")

    def get(self, key: str) -> bytes | None:
        def read() -> bytes | None:
            with self._connect() as connection:
                row = connection.execute("SELECT value, expires FROM cache WHERE key = ?",
                                         (key,)).fetchone()
            return None if row is None or (row[1] is not None and row[1] <= time.time()) \
                else bytes(row[0])
        return _off_hub(read)

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        expires = None if ttl is None else time.time() + ttl

        def write() -> None:
            with self._connect() as connection:
                connection.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?)",
                                   (key, value, expires))
        _off_hub(write)


class RedisStore:
    """A cache shared by every worker that points at one Redis; expiry is Redis's own."""

    def __init__(self, url: str):
        try:
            import redis  # the optional extra, imported only when a redis:// cache is configured
        except ImportError:
            raise ConfigError("a redis:// cache needs the redis package: pip install "
                              "'greenagents[celery]' (or redis)") from None

        self.client = redis.Redis.from_url(url)

    def get(self, key: str) -> bytes | None:
        value = self.client.get(f"greenagents:cache:{key}")
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.client.set(f"greenagents:cache:{key}", value,
                        px=None if ttl is None else max(1, round(ttl * 1000)))

    def lease(self, key: str, seconds: float) -> bool:
        """Take the right to compute ``key`` for ``seconds``: False while another process has it."""
        return bool(self.client.set(f"greenagents:cache:lease:{key}", b"1", nx=True,
                                    px=max(1, round(seconds * 1000))))

    def release(self, key: str) -> None:
        self.client.delete(f"greenagents:cache:lease:{key}")


class _Flight:
    """A keyed call in progress; identical calls wait on ``done`` and take its ``entry``."""

    def __init__(self) -> None:
        self.done = threading.Event()  # gevent's when patched: waiting parks only the greenlet
        self.entry: Entry | None = None
        self.owner = threading.get_ident()  # the greenlet's (or thread's) that leads it


class Caches:
    """One client's stores (one per URL) and its keyed calls in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stores: dict[str, Store] = {}
        self.in_flight: dict[str, _Flight] = {}


def store_for(url: str) -> Store:
    """The store behind ``url`` (``sqlite:///path`` or ``redis://...``), one per URL per client."""
    caches = state.current().part(Caches)
    store = caches.stores.get(url)
    if store is None:
        with caches.lock:
            store = caches.stores.get(url)
            if store is None:
                if url.startswith("sqlite:///"):
                    store = SQLiteStore(os.path.abspath(url[len("sqlite:///"):]))
                elif url.startswith(("redis://", "rediss://", "unix://")):
                    store = RedisStore(url)
                else:
                    raise ConfigError(f"cache={url!r}: use 'sqlite:///path/cache.db' or "
                                      "'redis://host:6379/0' (or cache=None to turn it off)")
                caches.stores[url] = store
    return store


def enabled(agent: type) -> bool:
    """Whether ``agent``'s answers are cached (its ``cache``, else the ``cache`` setting): the one
    check a call pays when caching is off."""
    opted = getattr(agent, "cache", None)
    return opted is not False and (opted is not None or settings().cache is not None)


def _policy(agent: type) -> tuple[Store, float | None] | None:
    """(store, ttl) when ``agent``'s answers are cached, else None."""
    if not enabled(agent):
        return None
    opted = getattr(agent, "cache", None)
    url = settings().cache
    ttl = None if opted is True or opted is None else float(opted)
    return store_for(url or DEFAULT_URL), ttl


def key_for(agent: type, messages: Sequence[dict[str, Any]],
            endpoints: Sequence[tuple[str, Endpoint]], schema: dict[str, Any] | None,
            tools: Sequence[dict[str, Any]] = ()) -> str:
    """The cache key of one call: a hex SHA-256 of everything that changes its answer."""
    material = {
        "chain": [(e.provider.name, e.base_url, e.model) for _, e in endpoints],
        "messages": messages,
        "schema": schema,
        "tools": list(tools),  # their specs: name, description, parameter schema
        "sampling": {name: getattr(agent, name, None) for name in _SAMPLING},
        "namespace": settings().cache_namespace,
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(encoded.encode()).hexdigest()


_warned: set[str] = set()  # problems already warned about: a warning per problem per process


def _safely(what: str, fn: Callable[[], T]) -> T | None:
    """A broken store costs money (a miss), never a call: warn once per problem and go on."""
    try:
        return fn()
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
        if problem not in _warned:
            _warned.add(problem)
            warnings.warn(f"greenagents cache: cannot {what} ({problem}); calls go to the "
                          "provider. Fix the store or set cache=None.", CacheWarning, stacklevel=3)
        return None


def _elsewhere(store: Store, key: str) -> tuple[bool, Entry | None]:
    """Lead ``key`` across processes: ``(True, None)`` once this process holds the lease (or the
    store has no leases, or cannot take one), ``(False, entry)`` when another process answered."""
    if not isinstance(store, RedisStore):
        return False, None
    from .slots import sleep  # a waiting call gives its slot away, as backoffs do

    pause = 0.02
    while True:
        taken = _safely("take a cache lease", lambda: store.lease(key, settings().timeout))
        raw = _safely("read the cache", lambda: store.get(key))  # it may have landed meanwhile
        if raw is not None:
            if taken:
                _safely("release a cache lease", lambda: store.release(key))
            return False, Entry.loads(raw)
        if taken is not False:  # None: Redis failed; the call goes to the provider (warned)
            return bool(taken), None
        sleep(pause)
        pause = min(2 * pause, 0.5)


class Lease:
    """What the cache says of one call about to be made: its answer (``hit``), or — when this call
    leads the identical ones — :meth:`settle` it with its entry once it ends (stored, handed to the
    calls that waited). With neither, make the call and store nothing: caching is off for it, or
    the identical call it waited for failed."""

    def __init__(self, hit: Entry | None = None, key: str = "", store: Store | None = None,
                 ttl: float | None = None, flight: _Flight | None = None,
                 in_flight: dict[str, _Flight] | None = None, leased: bool = False):
        self.hit, self._key, self._store, self._ttl, self._flight = hit, key, store, ttl, flight
        self._in_flight = in_flight  # the client's calls in flight, where ``flight`` is listed
        self._leased = leased  # this process holds the store's lease on the key (Redis)

    def settle(self, entry: Entry | None) -> None:
        """The call ended with ``entry`` (None: it failed); safe to call twice."""
        flight, self._flight = self._flight, None
        if flight is None:
            return
        store, key = self._store, self._key
        try:
            flight.entry = entry
            if entry is not None and store is not None:
                ttl = self._ttl
                _safely("write the cache", lambda: store.set(key, entry.dumps(), ttl))
        finally:
            if self._leased and isinstance(store, RedisStore):  # (only Redis has leases)
                _safely("release a cache lease", lambda: store.release(key))
            if self._in_flight is not None:
                del self._in_flight[key]
            flight.done.set()


def lease(agent: type, messages: Sequence[dict[str, Any]],
          endpoints: Sequence[tuple[str, Endpoint]], schema: dict[str, Any] | None,
          tools: Sequence[dict[str, Any]]) -> Lease:
    """Look the call up: a stored answer, or the answer of an identical call in flight (waited
    for), else a :class:`Lease` this call settles. Used by :func:`call_through` and by streams,
    which settle once their last delta is read."""
    policy = _policy(agent)
    if policy is None:
        return Lease()
    store, ttl = policy
    key = key_for(agent, messages, endpoints, schema, tools)
    in_flight = state.current().part(Caches).in_flight
    flight = in_flight.get(key)
    if flight is None:
        raw = _safely("read the cache", lambda: store.get(key))
        if raw is not None:
            return Lease(Entry.loads(raw))
        mine = _Flight()
        flight = in_flight.setdefault(key, mine)  # atomic: exactly one caller leads
        if flight is mine:
            held = Lease(None, key, store, ttl, mine, in_flight)
            try:
                held._leased, answered = _elsewhere(store, key)  # another process's call?
            except BaseException:
                held.settle(None)
                raise
            if answered is not None:  # another process answered: shared here, not stored again
                held._store = None
                held.settle(answered)
                return Lease(answered)
            return held
    if flight.owner == threading.get_ident():  # led by a stream this greenlet has not read to
        return Lease()                         # its end: waiting would wait for ourselves
    flight.done.wait()
    return Lease(flight.entry)  # None: the leader failed; this call asks for itself


def call_through(agent: type, messages: Sequence[dict[str, Any]],
                 endpoints: Sequence[tuple[str, Endpoint]], schema: dict[str, Any] | None,
                 tools: Sequence[dict[str, Any]], ask: Callable[[], Entry | None]) -> Entry | None:
    """An answer from the cache or an identical call in flight; else None once ``ask()`` ran here.

    ``ask`` sends the call and returns its :class:`Entry` when it answered and validated (None when
    it failed); that entry is stored and handed to the identical calls that waited for it.
    """
    held = lease(agent, messages, endpoints, schema, tools)
    if held.hit is not None:
        return held.hit
    entry = None
    try:
        entry = ask()
    finally:
        held.settle(entry)
    return None
