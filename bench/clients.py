"""The contenders: one way each of making N chat-completion calls, W at a time.

A contender is a *client* (how one call is made: ``requests``, ``urllib3``, the ``openai`` SDK,
``aiohttp``, ``AsyncOpenAI``, a greenagents ``Agent``, LangChain, LiteLLM) combined with an
*executor* (how calls overlap: one by one, a thread pool, bare greenlets, ``ga.each``/``ga.batch``,
an asyncio semaphore, or the peer library's own batch helper). Both halves are defined once here
and combined in :data:`CONTENDERS`, so every figure compares exactly the same code paths.

Every client keeps its defaults (the SDKs, LangChain, LiteLLM and greenagents retry failed calls
by default; raw ``requests``/``urllib3``/``aiohttp`` do not), as users get them. Every call sends
the same conversation (a system instruction and ``"call {i}"``), so request
bodies differ per call: the simulator rolls its faults per body. A runner is ``run(indices) ->
number of successful calls``; building one imports its libraries, so it happens in the child
process, after that child decided whether to monkey-patch.

This module imports only the standard library at the top: the parent process imports it to read
the registry, and a green child imports it after patching.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

Runner = Callable[[Sequence[int]], int]
SyncCall = Callable[[int], Any]
AsyncCall = Callable[[int], Awaitable[Any]]

MODEL = "gpt-4o-mini"
INSTRUCTIONS = "Classify the sentiment of the text."
API_KEY = "sk-bench"
TIMEOUT = 30.0  # per request: a stalled call fails the run (reported) instead of eating the budget


def messages(i: int) -> list[dict[str, str]]:
    """The conversation of call ``i`` (the same for every contender)."""
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": f"call {i}"}]


def body(i: int) -> bytes:
    return json.dumps({"model": MODEL, "messages": messages(i)}).encode()


@dataclass(frozen=True)
class Options:
    """What a runner is built for: the simulator's OpenAI-style URL, the width, and extras."""

    base_url: str                 # http://127.0.0.1:P/v1
    width: int
    tracking: str | None = None   # greenagents' execution log (overhead figure)


# ------------------------------------------------------------------ sync clients: one call each

def requests_call(opts: Options) -> SyncCall:
    """``requests.Session().post`` with a pool as wide as the run (no "pool is full" discards)."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=opts.width)
    session.mount("http://", adapter)
    url = opts.base_url + "/chat/completions"

    def call(i: int) -> Any:
        response = session.post(url, data=body(i), timeout=TIMEOUT,
                                headers={"content-type": "application/json",
                                         "authorization": f"Bearer {API_KEY}"})
        response.raise_for_status()
        return response.json()

    return call


def requests_tenacity_call(opts: Options) -> SyncCall:
    """``requests`` retried by tenacity, waiting what ``retry-after-ms``/``Retry-After`` say
    (the careful way; what the openai SDK and greenagents read too)."""
    import requests
    import tenacity

    plain = requests_call(opts)

    def wait_retry_after(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
        return float(min(8.0, 0.5 * 2 ** state.attempt_number))

    def retry_on(exc: BaseException) -> bool:
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            return exc.response.status_code in (408, 409, 429) or exc.response.status_code >= 500
        return isinstance(exc, requests.ConnectionError)

    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(4), wait=wait_retry_after,
                                 retry=tenacity.retry_if_exception(retry_on), reraise=True)
    return lambda i: retrying(plain, i)


def _urllib3_post(opts: Options) -> Callable[[bytes], Any]:
    """POST a body to the simulator's chat completions over one raw urllib3 pool; the JSON answer."""
    from urllib.parse import urlsplit

    import urllib3

    parts = urlsplit(opts.base_url)
    pool = urllib3.HTTPConnectionPool(parts.hostname or "127.0.0.1", parts.port, maxsize=opts.width,
                                      block=False, retries=False, timeout=TIMEOUT)
    path = parts.path + "/chat/completions"
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}

    def post(payload: bytes) -> Any:
        response = pool.request("POST", path, body=payload, headers=headers)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return json.loads(response.data)

    return post


def urllib3_call(opts: Options) -> SyncCall:
    """A raw ``urllib3.HTTPConnectionPool.request`` and ``json.loads``: the floor of sync HTTP."""
    post = _urllib3_post(opts)
    return lambda i: post(body(i))


def geventhttpclient_call(opts: Options) -> SyncCall:
    """A raw ``geventhttpclient.HTTPClient`` POST and ``json.loads``: the floor of greenagents'
    optional transport (a pool as wide as the run)."""
    from urllib.parse import urlsplit

    from geventhttpclient import HTTPClient

    parts = urlsplit(opts.base_url)
    client = HTTPClient(parts.hostname or "127.0.0.1", parts.port, concurrency=max(opts.width, 10),
                        connection_timeout=TIMEOUT, network_timeout=TIMEOUT)
    path = parts.path + "/chat/completions"
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}

    def call(i: int) -> Any:
        response = client.request("POST", path, body=body(i), headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return json.loads(response.read())

    return call


def urllib3_structured_call(opts: Options) -> SyncCall:
    """The agent's job by hand: raw urllib3 sending the same structured request (the same JSON
    schema, strict) and validating the answer with the same pydantic model — the fair floor for
    ``ga.batch(Agent)``, which the plain-text floor above is not."""
    post = _urllib3_post(opts)
    sentiment = sentiment_model()
    schema = {"name": "Sentiment", "strict": True, "schema": {
        **sentiment.model_json_schema(), "additionalProperties": False}}

    def call(i: int) -> Any:
        request = {"model": MODEL, "messages": messages(i),
                   "response_format": {"type": "json_schema", "json_schema": schema}}
        answer = post(json.dumps(request).encode())["choices"][0]["message"]["content"]
        return sentiment.model_validate_json(answer)

    return call


def openai_call(opts: Options) -> SyncCall:
    """The official SDK as users write it: one ``OpenAI`` client, ``chat.completions.create``."""
    import openai

    client = openai.OpenAI(base_url=opts.base_url, api_key=API_KEY, timeout=TIMEOUT)

    def call(i: int) -> Any:
        return client.chat.completions.create(model=MODEL, messages=messages(i))  # type: ignore[arg-type]

    return call


def sentiment_model() -> Any:
    """The structured output every structured contender asks for."""
    from typing import Literal

    from pydantic import BaseModel

    class Sentiment(BaseModel):
        label: Literal["positive", "negative", "neutral"]
        confidence: float

    return Sentiment


def agent_class(opts: Options) -> Any:
    """A greenagents Agent with structured output (a pydantic model), pointed at the simulator."""
    import greenagents as ga

    class BenchAgent(ga.Agent):
        model = f"openai/{MODEL}"
        instructions = INSTRUCTIONS
        output = sentiment_model()
        base_url = opts.base_url
        timeout = TIMEOUT

        def prompt(self, text: str) -> str:
            return text

    ga.configure(tracking=opts.tracking, max_concurrency=opts.width)
    return BenchAgent


def ga_batch_tracked(opts: Options) -> Runner:
    """:func:`ga_batch` with the SQLite execution log on; each run ends with
    ``ga.tracking.flush()``, so the writes are inside the measured time."""
    import dataclasses
    import os
    import tempfile

    import greenagents as ga

    database = os.path.join(tempfile.mkdtemp(prefix="bench-tracking-"), "runs.db")
    run = ga_batch(dataclasses.replace(opts, tracking=f"sqlite:///{database}"))

    def tracked(indices: Sequence[int]) -> int:
        ok = run(indices)
        ga.tracking.flush()
        return ok

    return tracked


def ga_batch_otel(opts: Options) -> Runner:
    """:func:`ga_batch` with OpenTelemetry on: the SDK's tracer provider and batch span processor,
    an exporter that drops the spans (what greenagents and the SDK cost, not the network)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import greenagents as ga

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    run = ga_batch(opts)
    ga.configure(otel=True)
    return run


def ga_batch_no_cooldown(opts: Options) -> Runner:
    """Diagnostic: :func:`ga_batch` with greenagents' endpoint-wide cooldown after a 429 turned
    off (``greenagents.limits.cooldown`` replaced by a no-op in this child only), to separate
    what releasing the slot gains from what the shared cooldown costs."""
    import greenagents.limits

    greenagents.limits.cooldown = lambda scope, retry_after: None
    return ga_batch(opts)


def ga_batch_gc_threshold(opts: Options) -> Runner:
    """:func:`ga_batch` in a child that raised CPython's cyclic-GC threshold first, as README's
    "Thousands at once: the garbage collector" shows a user doing it (greenagents never does):
    ``gc.set_threshold(10_000)``, so the GC's full passes over every waiting call's objects
    become rare."""
    import gc

    gc.set_threshold(GC_THRESHOLD)
    return ga_batch(opts)


#: What :func:`ga_batch_gc_threshold` sets (CPython's default first threshold: 700).
GC_THRESHOLD = 10_000


# ------------------------------------------------------------------ async clients

async def aiohttp_call(opts: Options) -> tuple[AsyncCall, Callable[[], Awaitable[Any]]]:
    """``aiohttp.ClientSession.post`` with an unlimited connector (the semaphore bounds it)."""
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=TIMEOUT))
    url = opts.base_url + "/chat/completions"
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}

    async def call(i: int) -> Any:
        async with session.post(url, data=body(i), headers=headers) as response:
            response.raise_for_status()
            return await response.json()

    return call, session.close


async def aiohttp_structured_call(opts: Options) -> tuple[AsyncCall, Callable[[], Awaitable[Any]]]:
    """The agent's job by hand over aiohttp: the same structured request as
    :func:`urllib3_structured_call` (JSON schema, strict), its answer validated by the same pydantic
    model — what ``ga.batch(Agent)``'s CPU per call is held against (issue #22's goal)."""
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=TIMEOUT))
    url = opts.base_url + "/chat/completions"
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}
    sentiment = sentiment_model()
    schema = {"name": "Sentiment", "strict": True, "schema": {
        **sentiment.model_json_schema(), "additionalProperties": False}}

    async def call(i: int) -> Any:
        request = {"model": MODEL, "messages": messages(i),
                   "response_format": {"type": "json_schema", "json_schema": schema}}
        async with session.post(url, data=json.dumps(request).encode(), headers=headers) as response:
            response.raise_for_status()
            answer = (await response.json())["choices"][0]["message"]["content"]
        return sentiment.model_validate_json(answer)

    return call, session.close


async def async_openai_call(opts: Options) -> tuple[AsyncCall, Callable[[], Awaitable[Any]]]:
    """The official ``AsyncOpenAI`` client, as users write it."""
    import openai

    client = openai.AsyncOpenAI(base_url=opts.base_url, api_key=API_KEY, timeout=TIMEOUT)

    async def call(i: int) -> Any:
        return await client.chat.completions.create(model=MODEL, messages=messages(i))  # type: ignore[arg-type]

    return call, client.close


# ------------------------------------------------------------------ executors

def _counted(call: SyncCall) -> Callable[[int], bool]:
    def safe(i: int) -> bool:
        try:
            call(i)
            return True
        except Exception:
            return False
    return safe


def sequential(call: SyncCall, opts: Options) -> Runner:
    """One call after another: the baseline every speed-up is measured against."""
    safe = _counted(call)
    return lambda indices: sum(safe(i) for i in indices)


def thread_pool(call: SyncCall, opts: Options) -> Runner:
    """A ``ThreadPoolExecutor(width)``: what LangChain, DSPy and LiteLLM batch helpers do."""
    from concurrent.futures import ThreadPoolExecutor

    executor, safe = ThreadPoolExecutor(opts.width), _counted(call)
    return lambda indices: sum(executor.map(safe, indices))


def bare_greenlets(call: SyncCall, opts: Options) -> Runner:
    """A ``gevent.pool.Pool(width)`` and nothing else: the floor under greenagents' runtime."""
    import gevent.pool

    pool, safe = gevent.pool.Pool(opts.width), _counted(call)
    return lambda indices: sum(pool.imap_unordered(safe, indices))


def ga_each(call: SyncCall, opts: Options) -> Runner:
    """``ga.each(items, fn, max_concurrent=width)`` over unmodified code."""
    import greenagents as ga

    return lambda indices: sum(r.ok for r in ga.each(indices, call, max_concurrent=opts.width))


def ga_batch(opts: Options) -> Runner:
    """``ga.batch([(Agent, {"text": ...}), ...], max_concurrent=width)``: the product path."""
    import greenagents as ga

    agent = agent_class(opts)

    def run(indices: Sequence[int]) -> int:
        calls = [(agent, {"text": f"call {i}"}) for i in indices]
        return sum(r.ok for r in ga.batch(calls, max_concurrent=opts.width))

    return run


def asyncio_semaphore(make: Callable[[Options], Awaitable[tuple[AsyncCall, Any]]],
                      opts: Options) -> Runner:
    """``asyncio.gather`` under an ``asyncio.Semaphore(width)``, one event loop kept across runs
    (so the client's connection pool survives the warm-up, as for the sync contenders)."""
    import asyncio

    loop = asyncio.new_event_loop()
    call, _close = loop.run_until_complete(make(opts))

    async def one(semaphore: asyncio.Semaphore, i: int) -> bool:
        async with semaphore:
            try:
                await call(i)
                return True
            except Exception:
                return False

    async def many(indices: Sequence[int]) -> int:
        semaphore = asyncio.Semaphore(opts.width)
        return sum(await asyncio.gather(*(one(semaphore, i) for i in indices)))

    return lambda indices: loop.run_until_complete(many(indices))


def langchain_batch(opts: Options) -> Runner:
    """LangChain: ``ChatOpenAI.batch(inputs, config={"max_concurrency": width})`` (threads)."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=opts.base_url, api_key=API_KEY,  # type: ignore[arg-type]
                     timeout=TIMEOUT)

    def run(indices: Sequence[int]) -> int:
        inputs = [messages(i) for i in indices]
        answers = llm.batch(inputs, config={"max_concurrency": opts.width},  # type: ignore[arg-type]
                            return_exceptions=True)
        return sum(not isinstance(a, Exception) for a in answers)

    return run


def litellm_batch(opts: Options) -> Runner:
    """LiteLLM: ``batch_completion(..., max_workers=width)`` (a thread pool inside)."""
    import litellm

    def run(indices: Sequence[int]) -> int:
        answers = litellm.batch_completion(
            model=f"openai/{MODEL}", messages=[messages(i) for i in indices],
            api_base=opts.base_url, api_key=API_KEY, max_workers=opts.width, timeout=TIMEOUT)
        return sum(not isinstance(a, Exception) for a in answers)

    return run


# ------------------------------------------------------------------ the registry

@dataclass(frozen=True)
class Contender:
    """One named combination, its label in tables, and what its child process needs."""

    key: str
    label: str
    build: Callable[[Options], Runner]
    green: bool = False          # the child monkey-patches first
    peer: str | None = None      # a third-party library that may be missing: skipped, noted
    venv: bool = False           # runs under the peers venv's interpreter (harness.PEERS_VENV)


def _sync(client: Callable[[Options], SyncCall],
          executor: Callable[[SyncCall, Options], Runner]) -> Callable[[Options], Runner]:
    return lambda opts: executor(client(opts), opts)


def _async(client: Callable[[Options], Awaitable[tuple[AsyncCall, Any]]]) -> Callable[[Options], Runner]:
    return lambda opts: asyncio_semaphore(client, opts)


CONTENDERS: dict[str, Contender] = {c.key: c for c in [
    Contender("ga_batch", "greenagents ga.batch(Agent)", ga_batch, green=True),
    Contender("ga_batch_tracked", "greenagents ga.batch(Agent), tracking on", ga_batch_tracked,
              green=True),
    Contender("ga_batch_otel", "greenagents ga.batch(Agent), OpenTelemetry on", ga_batch_otel,
              green=True),
    Contender("ga_batch_gc", "greenagents ga.batch(Agent), gc.set_threshold(10,000)",
              ga_batch_gc_threshold, green=True),
    Contender("ga_batch_no_cooldown", "diagnostic: ga.batch(Agent), 429 cooldown off",
              ga_batch_no_cooldown, green=True),
    Contender("ga_each_openai", "greenagents ga.each + openai SDK", _sync(openai_call, ga_each),
              green=True),
    Contender("green_urllib3", "urllib3 in bare greenlets", _sync(urllib3_call, bare_greenlets),
              green=True),
    Contender("green_geventhttpclient", "geventhttpclient in bare greenlets",
              _sync(geventhttpclient_call, bare_greenlets), green=True, peer="geventhttpclient"),
    Contender("ga_each_geventhttpclient", "greenagents ga.each + raw geventhttpclient",
              _sync(geventhttpclient_call, ga_each), green=True, peer="geventhttpclient"),
    Contender("ga_each_urllib3", "greenagents ga.each + raw urllib3", _sync(urllib3_call, ga_each),
              green=True),
    Contender("green_urllib3_structured", "urllib3 in bare greenlets, same structured job by hand",
              _sync(urllib3_structured_call, bare_greenlets), green=True),
    Contender("sequential", "sequential requests", _sync(requests_call, sequential)),
    Contender("threads_requests", "threads + requests", _sync(requests_call, thread_pool)),
    Contender("threads_openai", "threads + openai SDK", _sync(openai_call, thread_pool)),
    Contender("threads_tenacity", "threads + requests + tenacity",
              _sync(requests_tenacity_call, thread_pool)),
    Contender("asyncio_aiohttp", "asyncio + aiohttp", _async(aiohttp_call), peer="aiohttp"),
    Contender("asyncio_aiohttp_structured", "asyncio + aiohttp, same structured job by hand",
              _async(aiohttp_structured_call), peer="aiohttp"),
    Contender("asyncio_openai", "asyncio + AsyncOpenAI", _async(async_openai_call)),
    Contender("langchain", "LangChain ChatOpenAI.batch", langchain_batch, peer="langchain_openai"),
    Contender("litellm", "LiteLLM batch_completion", litellm_batch, peer="litellm", venv=True),
]}
