"""The one error hierarchy of greenagents.

Every failure a call can meet is one of these, so ``except ga.errors.GreenAgentsError`` is enough
to catch ours and nothing else. Each message says what happened *and what to do*; none contains a
secret (API keys are never formatted into a message; see :func:`redact`).

    GreenAgentsError
    ├── ConfigError          bad settings, missing API key, unknown provider
    ├── InputError           a call's arguments do not fit its signature; no request was sent
    ├── ProviderError        the provider answered badly or not at all
    │   ├── RateLimited      429 (``retry_after`` in seconds when the provider said)
    │   │   └── RetryAfterTooLong  its Retry-After exceeds ``retry_after_max``; not retried
    │   ├── QuotaExceeded    429 ``insufficient_quota``: out of credit; not retried
    │   ├── ServerError      5xx, Anthropic 529 "overloaded"
    │   ├── Timeout          no answer within the timeout
    │   ├── ConnectionFailed refused, reset, DNS, TLS
    │   ├── ResponseTooLarge the answer outgrew max_response_bytes; not retried
    │   ├── AuthError        401/403: wrong or missing key
    │   ├── BadRequest       400/404/422 and other 4xx: the request itself is wrong
    │   ├── CircuitOpen      the endpoint kept failing: not sent, fallbacks tried at once
    │   ├── BatchExpired     a Batch API row the provider did not answer within its window
    │   └── BatchCancelled   a Batch API row whose batch was cancelled before it ran
    ├── OutputError          the model's answer never validated against the output type
    ├── BudgetExceeded       the next attempt could cross a max_cost_usd budget; not sent
    ├── StreamClosed         the caller stopped reading a stream before the answer's end
    ├── ToolLoopError        a tool-using agent still called tools after ``max_turns`` turns
    ├── ToolError            a tool failed and the agent's ``tool_errors = "raise"``
    └── Aborted              the run stopped this call: more than ``max_errors`` calls failed

    KeyboardInterrupt
    └── Interrupted          Ctrl-C in ga.batch/each; ``.results`` holds the calls finished so far

``ProviderError.retryable`` says whether trying again can help; the retry policy reads it.

>>> from greenagents.errors import RateLimited
>>> RateLimited("slow down", status=429, retry_after=2.0).retryable
True
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "Aborted",
    "AuthError",
    "BadRequest",
    "BatchCancelled",
    "BatchExpired",
    "BudgetExceeded",
    "CircuitOpen",
    "ConfigError",
    "ConnectionFailed",
    "GreenAgentsError",
    "InputError",
    "Interrupted",
    "OutputError",
    "ProviderError",
    "QuotaExceeded",
    "RateLimited",
    "ResponseTooLarge",
    "RetryAfterTooLong",
    "ServerError",
    "StreamClosed",
    "Timeout",
    "ToolError",
    "ToolLoopError",
    "redact",
    "scrub",
]

# Shapes of API keys of the providers we speak to; anything that looks like one is masked.
_SECRET = re.compile(r"(sk-ant-[A-Za-z0-9_-]{6,}|sk-[A-Za-z0-9_-]{6,}|Bearer\s+(?!\*\*\*)[^\s'\"]+)")


def redact(text: str, *secrets: str | None) -> str:
    """Mask API keys in ``text``: the given ``secrets`` verbatim, and anything shaped like a key.

    >>> redact("auth failed for sk-abcdefghijkl")
    'auth failed for sk-***'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if "sk-" not in text and "Bearer" not in text:  # no key shape (the usual case): no regex
        return text
    return _SECRET.sub(lambda m: m.group(0).split("-")[0] + "-***" if m.group(0).startswith("sk")
                       else "Bearer ***", text)


def scrub(error: BaseException, *secrets: str | None) -> BaseException:
    """``error`` with keys masked (see :func:`redact`) in its ``str`` and ``repr``: the one step
    every error takes before it leaves the library in a :class:`~greenagents.Result` — hence its
    repr, the JSONL output, the Celery JSON, the execution log.

    The message is masked in place, so the class and its attributes stay; an error whose text is
    not just its ``args`` (``UnicodeEncodeError`` keeps the string it failed on) is replaced by a
    :class:`GreenAgentsError` naming its class. Nothing to mask (the usual case): ``error`` itself.

    >>> scrub(ValueError("Invalid header value b'Bearer sk-abcdefghijkl'"))
    ValueError("Invalid header value b'Bearer ***'")
    """
    text, shown = str(error), repr(error)
    clean = redact(text, *secrets)
    if clean == text and redact(shown, *secrets) == shown:
        return error
    kind = type(error)
    if kind.__str__ is BaseException.__str__ and kind.__repr__ is BaseException.__repr__:
        error.args = (clean,)  # str and repr come from args alone: mask in place
        return error
    return GreenAgentsError(f"{kind.__name__}: {clean}")


class GreenAgentsError(Exception):
    """Base of every error greenagents raises or puts in a :class:`~greenagents.Result`."""


class ConfigError(GreenAgentsError):
    """The configuration cannot work: a missing API key, an unknown provider, a bad setting."""


class InputError(GreenAgentsError):
    """A call's inputs do not fit its signature. Raised before any request is sent."""


class OutputError(GreenAgentsError):
    """The model's answer did not validate against the agent's output type, re-asks included."""

    retryable = False


class Aborted(GreenAgentsError):
    """The run stopped before this call ended, because more than ``max_errors`` calls failed.

    Not retried, and not this call's fault: fix the failures the run's warning names, then run
    again (``greenagents run --max-errors`` leaves these calls out of its output, so
    ``--resume`` runs them).
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) stopped a batch; ``results`` are the Results finished before it.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still stops; the finished work is not
    lost.

    >>> try:
    ...     raise Interrupted([])
    ... except KeyboardInterrupt as stop:
    ...     stop.results
    []
    """

    def __init__(self, results: list[Any]):
        super().__init__(f"interrupted: {len(results)} call(s) had finished (kept in .results)")
        self.results = results


class ProviderError(GreenAgentsError):
    """The provider failed to answer usefully. ``status`` is the HTTP status when there was one."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, provider: str | None = None):
        super().__init__(message)
        self.status = status
        self.provider = provider


class RateLimited(ProviderError):
    """429: the provider asked us to slow down; ``retry_after`` is its requested wait in seconds."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = 429, provider: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message, status=status, provider=provider)
        self.retry_after = retry_after


class RetryAfterTooLong(RateLimited):
    """A 429 whose ``Retry-After`` is longer than ``retry_after_max``: not retried, the call fails
    at once (waiting that long would hold the batch). Still a :class:`RateLimited`.

    >>> RetryAfterTooLong("wait 600s", retry_after=600.0).retryable
    False
    """

    retryable = False


class QuotaExceeded(ProviderError):
    """The account is out of credit or over its spending limit (OpenAI's 429 ``insufficient_quota``).

    A 429 like a rate limit, but no wait ends it: retrying only burns the batch's time, so it is
    not retried and does not slow other calls down. Fix the billing, then run again.
    """


class ServerError(ProviderError):
    """5xx or "overloaded": the provider's fault, usually gone on the next try."""

    retryable = True


class Timeout(ProviderError):
    """No (complete) answer within the timeout."""

    retryable = True


class ConnectionFailed(ProviderError):
    """The connection could not be made or broke mid-request."""

    retryable = True


class ResponseTooLarge(ProviderError):
    """The answer's decoded body outgrew ``max_response_bytes``; reading stopped at the cap.

    Not retried: the same request would bring the same answer. A real chat completion is far
    below the default cap (16 MiB); raise ``ga.configure(max_response_bytes=...)`` if yours is not.
    """


class AuthError(ProviderError):
    """401/403: the API key is missing, wrong or lacks permission. Retrying cannot help."""


class BadRequest(ProviderError):
    """The provider rejected the request itself (400, 404, 422...). Retrying cannot help."""


class CircuitOpen(ProviderError):
    """The endpoint's circuit breaker is open after repeated 5xx/connection/timeout failures.

    Nothing was sent. Not retried: the call moves to its next fallback at once. See
    :mod:`greenagents.breakers`.
    """


class BudgetExceeded(GreenAgentsError):
    """A ``max_cost_usd`` budget could be crossed by the next attempt, so it was not sent.

    Never retried and no fallback is tried: another model would spend the same money.
    """
class BatchExpired(ProviderError):
    """A Batch API row the provider left unanswered when its completion window closed.

    Retryable: a follow-up batch (or ``fallback="online"``) usually answers it.
    """

    retryable = True


class BatchCancelled(ProviderError):
    """A Batch API row whose batch was cancelled (``job.cancel()``) before the row ran."""


class ToolLoopError(GreenAgentsError):
    """A tool-using agent's model still asked for tools after ``max_turns`` model turns."""


class ToolError(GreenAgentsError):
    """A tool failed (raised, timed out, bad arguments, unknown tool) with ``tool_errors =
    "raise"``; ``tool`` names it, and ``__cause__`` is the tool's own exception when it raised."""

    def __init__(self, message: str, *, tool: str):
        super().__init__(message)
        self.tool = tool


class StreamClosed(GreenAgentsError):
    """A streamed call was closed by its reader before the answer's end (``break``, a client
    that went away); the request was cancelled. Not retried: the reader chose to stop."""
