"""The providers' Batch APIs on the wire: OpenAI Files + Batches, Anthropic Message Batches.

Each line of a batch is the very request body an online call would send (built by the provider's
``build``), so structured output travels as it does online: OpenAI ``response_format``, Anthropic's
forced tool. Each answer in the results is read by the provider's own ``parse``: a row's
:class:`~greenagents.providers.Completion` or its mapped ``ProviderError``, exactly as online.

Two classes translate and do the I/O of one provider's control requests (upload, create,
retrieve, cancel, list, results) through :func:`greenagents.http.request`; the job logic
(splitting, retries, persistence) lives in :mod:`greenagents.batchjobs`.

>>> from greenagents.providers import resolve
>>> api = batch_api(resolve("openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1"))
>>> api.line("job-0", {"model": "gpt-4o-mini", "messages": []})["url"]
'/v1/chat/completions'
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import http
from ..errors import BatchCancelled, BatchExpired, ConfigError, ProviderError
from ..http import HttpResponse
from .anthropic import API_VERSION
from .base import Completion, Provider

if TYPE_CHECKING:
    from . import Endpoint

__all__ = ["BatchApi", "BatchState", "Row", "batch_api"]

#: HTTP status an errored Message Batches row would have had online, by its error type.
_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
           "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
           "api_error": 500, "overloaded_error": 529}
#: Seconds our clock may be ahead of Anthropic's when finding a batch created unheard.
_SKEW_S = 2.0
#: Seconds allowed per control request (uploads of 200 MB files included).
CONTROL_TIMEOUT_S = 300.0
#: Bytes a control response may hold: a results file carries up to 100,000 answers, so one
#: answer's cap (``max_response_bytes``) does not apply; this still bounds a hostile server.
CONTROL_MAX_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class BatchState:
    """What a provider says of one batch: ``ended``, counts by state, and why it failed if so."""

    id: str
    ended: bool
    counts: dict[str, int]
    failure: str | None = None


@dataclass(frozen=True)
class Row:
    """One answered row: its ``custom_id`` and the outcome, read like an online answer."""

    custom_id: str
    completion: Completion | None
    error: Exception | None


class BatchApi:
    """One provider's Batch API at one base URL; subclasses say where and in which shapes."""

    #: Provider limits per batch: requests and bytes (of the file / of the request).
    max_rows: int
    max_bytes: int

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def line(self, custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One request of the batch, in this provider's shape."""
        raise NotImplementedError

    def upload(self, lines: list[bytes]) -> str | None:
        """Store the lines with the provider ahead of creation; None when the API has no files."""
        return None

    def create(self, lines: list[bytes], file_id: str | None, label: dict[str, str]) -> str:
        """Create the batch; its id."""
        raise NotImplementedError

    def find(self, file_id: str | None, rows: int, since: float,
             taken: set[str]) -> str | None:
        """The id of a batch this job created but never heard back about (a crash between
        create and recording its id), or None; ``taken`` are the job's known batches."""
        raise NotImplementedError

    def state(self, batch_id: str) -> BatchState:
        """Retrieve the batch."""
        raise NotImplementedError

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (rows not yet run end as cancelled)."""
        raise NotImplementedError

    def results(self, batch_id: str) -> Iterator[Row]:
        """Every row of an ended batch."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ shared

    def _call(self, method: str, url: str, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> HttpResponse:
        return http.request(method, url, body, {**self._auth(), **(headers or {})},
                            timeout=CONTROL_TIMEOUT_S, provider=self.provider.name,
                            hint=f"check {self.provider.base_url_env}", max_bytes=CONTROL_MAX_BYTES)

    def _json(self, method: str, url: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        kind = {} if body is None else {"content-type": "application/json"}
        payload = self.provider.checked(self._call(method, url, data, kind))
        if not isinstance(payload, dict):
            raise ProviderError(f"{self.provider.name} answered {url} without a JSON object; "
                                "is the base URL this provider's API?", provider=self.provider.name)
        return payload

    def _auth(self) -> dict[str, str]:
        raise NotImplementedError

    def _answer(self, custom_id: str, status: int, body: Any) -> Row:
        """A row whose answer is an HTTP response body: parsed exactly as an online answer."""
        response = HttpResponse(status, {}, json.dumps(body).encode())
        try:
            return Row(custom_id, self.provider.parse(response), None)
        except ProviderError as exc:
            return Row(custom_id, None, exc)


class OpenAIBatchApi(BatchApi):
    """``/files`` (purpose ``batch``) and ``/batches`` of OpenAI, 24 h window."""

    max_rows, max_bytes = 50_000, 200 * 1024 * 1024

    def line(self, custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": dict(body)}

    def _auth(self) -> dict[str, str]:
        key = self.provider.api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    def upload(self, lines: list[bytes]) -> str | None:
        import urllib3  # lazily: it imports ssl

        data, kind = urllib3.encode_multipart_formdata(
            {"purpose": "batch", "file": ("batch.jsonl", b"".join(lines), "application/jsonl")})
        reply = self.provider.checked(self._call("POST", f"{self.provider.base_url}/files", data,
                                                 {"content-type": kind}))
        return str(reply["id"])

    def create(self, lines: list[bytes], file_id: str | None, label: dict[str, str]) -> str:
        reply = self._json("POST", f"{self.provider.base_url}/batches", {
            "input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h", "metadata": label})
        return str(reply["id"])

    def find(self, file_id: str | None, rows: int, since: float,
             taken: set[str]) -> str | None:
        # the input file is this part's own: a batch reading it can only be ours (it was created
        # moments before the crash, so it is on the first page, newest first)
        page = self._json("GET", f"{self.provider.base_url}/batches?limit=100")
        return next((str(b["id"]) for b in page.get("data") or ()
                     if b.get("input_file_id") == file_id), None)

    def state(self, batch_id: str) -> BatchState:
        reply = self._json("GET", f"{self.provider.base_url}/batches/{batch_id}")
        status = reply.get("status")
        counts = reply.get("request_counts") or {}
        failure = None
        if status == "failed":
            errors = (reply.get("errors") or {}).get("data") or [{}]
            failure = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
        return BatchState(batch_id, status in ("completed", "failed", "expired", "cancelled"),
                          {"total": int(counts.get("total") or 0),
                           "succeeded": int(counts.get("completed") or 0),
                           "failed": int(counts.get("failed") or 0)}, failure)

    def cancel(self, batch_id: str) -> None:
        self._json("POST", f"{self.provider.base_url}/batches/{batch_id}/cancel")

    def results(self, batch_id: str) -> Iterator[Row]:
        reply = self._json("GET", f"{self.provider.base_url}/batches/{batch_id}")
        for key in ("output_file_id", "error_file_id"):
            if reply.get(key):
                content = self._call("GET", f"{self.provider.base_url}/files/{reply[key]}/content")
                if not 200 <= content.status < 300:
                    self.provider.checked(content)
                yield from self._rows(content.data)

    def _rows(self, data: bytes) -> Iterator[Row]:
        for raw in data.splitlines():
            if not raw.strip():
                continue
            item = json.loads(raw)
            custom_id = str(item["custom_id"])
            response, error = item.get("response"), item.get("error")
            if response:
                yield self._answer(custom_id, int(response["status_code"]), response["body"])
            elif error and error.get("code") == "batch_expired":
                yield Row(custom_id, None, BatchExpired(
                    f"{self.provider.name}: the batch's 24 h window closed before this row ran",
                    provider=self.provider.name))
            else:
                message = (error or {}).get("message") or "no answer"
                yield Row(custom_id, None, ProviderError(
                    f"{self.provider.name}: batch row failed: {message}",
                    provider=self.provider.name))


class AnthropicBatchApi(BatchApi):
    """``/v1/messages/batches`` of Anthropic: requests inline, no files, 24 h window."""

    max_rows, max_bytes = 100_000, 256 * 1024 * 1024

    def line(self, custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": dict(body)}

    def _auth(self) -> dict[str, str]:
        key = self.provider.api_key
        return {"anthropic-version": API_VERSION, **({"x-api-key": key} if key else {})}

    def create(self, lines: list[bytes], file_id: str | None, label: dict[str, str]) -> str:
        body = b'{"requests":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"
        reply = self.provider.checked(self._call(
            "POST", f"{self.provider.base_url}/v1/messages/batches", body,
            {"content-type": "application/json"}))
        return str(reply["id"])

    def find(self, file_id: str | None, rows: int, since: float,
             taken: set[str]) -> str | None:
        # Message Batches carry no metadata: a batch the job does not know yet, created since we
        # started creating (give or take clock skew) with as many requests, is taken as ours.
        from datetime import datetime

        page = self._json("GET", f"{self.provider.base_url}/v1/messages/batches?limit=100")
        for batch in page.get("data") or ():
            created = datetime.fromisoformat(str(batch["created_at"]).replace("Z", "+00:00"))
            total = sum(int(v or 0) for v in (batch.get("request_counts") or {}).values())
            if created.timestamp() >= since - _SKEW_S and total == rows and \
                    batch["id"] not in taken:
                return str(batch["id"])
        return None

    def state(self, batch_id: str) -> BatchState:
        reply = self._json("GET", f"{self.provider.base_url}/v1/messages/batches/{batch_id}")
        counts = {k: int(v or 0) for k, v in (reply.get("request_counts") or {}).items()}
        return BatchState(batch_id, reply.get("processing_status") == "ended",
                          {"total": sum(counts.values()), "succeeded": counts.get("succeeded", 0),
                           "failed": sum(counts.get(k, 0) for k in ("errored", "expired",
                                                                    "canceled"))})

    def cancel(self, batch_id: str) -> None:
        self._json("POST", f"{self.provider.base_url}/v1/messages/batches/{batch_id}/cancel")

    def results(self, batch_id: str) -> Iterator[Row]:
        reply = self._json("GET", f"{self.provider.base_url}/v1/messages/batches/{batch_id}")
        url = reply.get("results_url") or \
            f"{self.provider.base_url}/v1/messages/batches/{batch_id}/results"
        content = self._call("GET", str(url))
        if not 200 <= content.status < 300:
            self.provider.checked(content)
        for raw in content.data.splitlines():
            if raw.strip():
                yield self._row(json.loads(raw))

    def _row(self, item: dict[str, Any]) -> Row:
        custom_id, result = str(item["custom_id"]), item["result"]
        kind, name = result.get("type"), self.provider.name
        if kind == "succeeded":
            return self._answer(custom_id, 200, result["message"])
        if kind == "errored":
            error = result.get("error") or {}
            status = _STATUS.get(str((error.get("error") or {}).get("type")), 400)
            return self._answer(custom_id, status, error)
        if kind == "expired":
            return Row(custom_id, None, BatchExpired(
                f"{name}: the batch's 24 h window closed before this row ran", provider=name))
        return Row(custom_id, None, BatchCancelled(f"{name}: the batch was cancelled before "
                                                   "this row ran", provider=name))


def batch_api(endpoint: Endpoint) -> BatchApi:
    """The Batch API of ``endpoint``'s provider, or a ConfigError naming what to do instead.

    >>> from greenagents.providers import resolve
    >>> batch_api(resolve("ollama/llama3"))
    Traceback (most recent call last):
    ...
    greenagents.errors.ConfigError: ollama/llama3: ollama has no Batch API; run it online \
(--mode online, or Agent.batch)
    """
    name = endpoint.provider.name
    if name == "openai":
        return OpenAIBatchApi(endpoint.provider)
    if name == "anthropic":
        return AnthropicBatchApi(endpoint.provider)
    raise ConfigError(f"{name}/{endpoint.model}: {name} has no Batch API; run it online "
                      "(--mode online, or Agent.batch)")
