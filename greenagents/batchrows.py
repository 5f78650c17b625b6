"""One input of a batch job: its request, what each batch answered, and its final Result.

Kept apart from the job (:mod:`greenagents.batchjobs`), which only plans, submits and polls:
this is where a batch answer meets the agent's output type, exactly as an online answer does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import pricing, providers, tracking
from .agent import Agent
from .config import settings
from .errors import ConfigError
from .providers import Completion
from .providers.batch import batch_api
from .result import Attempt, Result, Usage, target_name
from .retry import Retry, retryable
from .structured import InvalidOutput

__all__ = ["BatchRow", "fingerprint", "prepare", "resubmissions"]


@dataclass
class BatchRow:
    """One input of the job and what happened to it so far."""

    index: int
    agent: type[Agent]
    inputs: Mapping[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    endpoint: providers.Endpoint | None = None
    model: str = ""
    value: Any = None
    error: BaseException | None = None
    done: bool = False
    usage: Usage = field(default_factory=Usage)
    history: list[Attempt] = field(default_factory=list)
    finished: float | None = None
    online: Result[Any] | None = None  # the online fallback's own Result, if it ran

    @property
    def worth_retrying(self) -> bool:
        """Failed in a batch in a way another try can fix (5xx, 429, expiry, invalid output)."""
        return not self.done and bool(self.history) and self.error is not None and \
            retryable(self.error)

    @property
    def group(self) -> tuple[str, str, str]:
        assert self.endpoint is not None
        return self.endpoint.provider.name, self.endpoint.base_url, self.endpoint.model

    def apply(self, completion: Completion | None, error: Exception | None, now: float) -> None:
        """One batch's answer for this row (a completion to validate, or an error)."""
        self.finished = now
        if completion is not None:
            self.usage = self.usage + completion.usage
            try:
                self.value, self.error = self.agent._output_spec().parse(completion.text), None
            except InvalidOutput as exc:
                error = exc
        if error is not None:
            self.error = error
        self.done = error is None
        self.history.append(Attempt(len(self.history) + 1, self.model,
                                   getattr(error, "status", None) if error else 200,
                                   type(error).__name__ if error else None, 0.0))

    def result(self, started: float) -> Result[Any]:
        """The row as a Result: batch usage at the batch price, plus the online fallback's."""
        cost = pricing.cost_usd(self.model, self.usage, batch=True)
        online = self.online
        result: Result[Any] = Result(
            index=self.index, target=target_name(self.agent), value=self.value, error=self.error,
            attempts=len(self.history), duration_s=(self.finished or started) - started,
            usage=self.usage, cost_usd=cost, model=self.model, history=tuple(self.history))
        if online is not None:  # it logged itself already
            result.attempts += online.attempts
            result.history += online.history
            result.usage = self.usage + (online.usage or Usage())
            result.model = online.model
            result.cost_usd = None if cost is None or online.cost_usd is None else \
                cost + online.cost_usd
        else:
            tracking.record(result, dict(self.inputs))
        return result


def prepare(index: int, call: Any) -> BatchRow:
    """Validate one call as ``Agent.call`` would; a problem with its inputs fails that row alone."""
    if not (isinstance(call, tuple) and len(call) == 2 and isinstance(call[0], type)
            and issubclass(call[0], Agent) and isinstance(call[1], Mapping)):
        raise ConfigError(f"submit_batch: call {index} is {call!r:.80}; give (AgentClass, "
                          "{inputs}) pairs (plain functions have no Batch API)")
    agent, inputs = call
    row = BatchRow(index, agent, inputs)
    model, row.endpoint = agent._endpoints()[0]  # a missing key or unknown provider: raise now
    row.model = model
    batch_api(row.endpoint)  # a provider without a Batch API: raise now
    try:
        row.messages = agent._messages(agent._inputs().validate((), dict(inputs)))
    except Exception as exc:  # bad inputs, a bug in prompt(): this row's error only
        row.error, row.done = exc, True
    return row


def resubmissions(agent: type[Agent]) -> int:
    """How many follow-up batches a failing row may join: the agent's retry count."""
    retries = agent.retries if agent.retries is not None else settings().retries
    if isinstance(retries, Retry):
        return retries.max
    if isinstance(retries, int):
        return retries
    return int(getattr(retries.stop, "max_attempt_number", 1)) - 1  # a tenacity.Retrying


def fingerprint(calls: list[Any]) -> str:
    """sha256 of the calls (targets and inputs): what a reattaching job must match."""
    text = json.dumps([[target_name(c[0]), dict(c[1])] for c in calls], sort_keys=True,
                      default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
