"""The simulator's Batch APIs: OpenAI Files + Batches and Anthropic Message Batches.

A batch holds request bodies; each row is answered by the same logic as an online call (the
dialect parses it, :func:`~greenagents.testing.answers.compose` answers it, the dialect renders
it), so structured output, forced tools and usage come out as they would online. Knobs (from
:class:`~greenagents.testing.options.SimOptions`):

- ``batch_delay``: seconds from creation until a batch has ended (counts move meanwhile);
- ``batch_row_failure`` / ``batch_row_expiry``: the share of rows answered with an error / left
  expired, rolled per ``custom_id`` (reproducible with ``seed``);
- ``batch_max_rows`` / ``batch_max_bytes``: per batch (per file for OpenAI); defaults are the
  providers' (OpenAI 50,000 requests, 200 MB; Anthropic 100,000 requests, 256 MB), answered
  with the providers' errors;
- ``batch_create_latency``: seconds a create waits before it takes effect; a client that hangs up
  meanwhile creates nothing (the kill-between-upload-and-create tests need that window);
- the ``schema_invalid`` fault rate applies to rows too (an answer that breaks its schema).

``stats()["batches"]`` counts uploads and creates, so a test can prove nothing was submitted twice.

>>> store = BatchStore(SimOptions())
>>> store.counts()
{'files': 0, 'openai_batches': 0, 'anthropic_batches': 0, 'cancels': 0}
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.socket import wait_read

from greenagents.testing.answers import compose
from greenagents.testing.anthropic_api import AnthropicDialect
from greenagents.testing.batch_formats import input_rows, iso, json_body, loads, multipart, page
from greenagents.testing.openai_api import OpenAIDialect
from greenagents.testing.options import SimOptions
from greenagents.testing.shapes import Dialect, InvalidRequest, digest

#: The providers' own limits, used when the options set none.
OPENAI_MAX_ROWS, OPENAI_MAX_BYTES = 50_000, 200 * 1024 * 1024
ANTHROPIC_MAX_ROWS, ANTHROPIC_MAX_BYTES = 100_000, 256 * 1024 * 1024
PREFIXES = ("/v1/files", "/v1/batches", "/v1/messages/batches")

#: (status, JSON body or raw bytes) — the server turns it into a reply.
Answered = tuple[int, Any]
_OPENAI, _ANTHROPIC = OpenAIDialect(), AnthropicDialect()
_WINDOW_S = 24 * 3600


@dataclass
class _Batch:
    id: str
    provider: str
    rows: list[tuple[str, Any]]           # (custom_id, request body)
    created: float
    ready: float
    input_file_id: str | None = None
    metadata: dict[str, Any] | None = None
    cancelled: float | None = None
    failed: list[dict[str, str]] | None = None
    outcome: dict[str, tuple[str, Any]] = field(default_factory=dict)  # custom_id -> (kind, body)
    files: dict[str, str] = field(default_factory=dict)  # "output"/"error" -> file id


class BatchStore:
    """Files and batches of one simulator, in memory; only the server's thread touches them."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, _Batch] = {}
        self.created = {"files": 0, "openai_batches": 0, "anthropic_batches": 0, "cancels": 0}

    def counts(self) -> dict[str, int]:
        """Uploads, creates and cancels so far (``stats()["batches"]``)."""
        return dict(self.created)

    def handle(self, path: str, method: str, environ: dict[str, Any]) -> Answered:
        """Serve one request under :data:`PREFIXES`."""
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        anthropic = parts[:2] == ["messages", "batches"]
        dialect: Dialect = _ANTHROPIC if anthropic else _OPENAI
        parts = parts[2:] if anthropic else parts
        try:
            return self._route(dialect, parts, method, environ)
        except InvalidRequest as exc:
            return dialect.error("invalid_request", str(exc))
        except KeyError as exc:
            return dialect.error("not_found", f"No such object: {exc.args[0]}")

    def _route(self, dialect: Dialect, parts: list[str], method: str,
               environ: dict[str, Any]) -> Answered:
        routes: dict[tuple[str, str], Callable[[], Answered]]
        if dialect is _ANTHROPIC:
            routes = {
                ("POST", ""): lambda: self._anthropic_create(environ),
                ("GET", ""): lambda: (200, page([self._anthropic_view(b, environ) for b in
                                                  self._of("anthropic")], anthropic=True)),
                ("GET", "id"): lambda: (200, self._anthropic_view(self._get(parts[0]), environ)),
                ("GET", "results"): lambda: self._anthropic_results(parts[0]),
                ("POST", "cancel"): lambda: (200, self._anthropic_view(self._cancel(parts[0]),
                                                                       environ)),
            }
        elif parts[0] == "files":
            parts = parts[1:]
            routes = {
                ("POST", ""): lambda: self._upload(environ),
                ("GET", "id"): lambda: (200, self.files[parts[0]][0]),
                ("GET", "content"): lambda: (200, self.files[parts[0]][1]),
            }
        else:
            parts = parts[1:]
            routes = {
                ("POST", ""): lambda: self._openai_create(environ),
                ("GET", ""): lambda: (200, page([self._openai_view(b) for b in
                                                  self._of("openai")], anthropic=False)),
                ("GET", "id"): lambda: (200, self._openai_view(self._get(parts[0]))),
                ("POST", "cancel"): lambda: (200, self._openai_view(self._cancel(parts[0]))),
            }
        action = "" if not parts else "id" if len(parts) == 1 else parts[1]
        handler = routes.get((method, action))
        if handler is None:
            if any(key[1] == action for key in routes):
                return dialect.error("method_not_allowed", f"{method} is not allowed here.")
            return dialect.error("not_found", f"Unknown request URL: {environ['PATH_INFO']}.")
        return handler()

    # ------------------------------------------------------------------------ shared

    def _get(self, batch_id: str) -> _Batch:
        return self.batches[batch_id]

    def _of(self, provider: str) -> list[_Batch]:
        return sorted((b for b in self.batches.values() if b.provider == provider),
                      key=lambda b: -b.created)

    def _new(self, provider: str, rows: list[tuple[str, Any]], environ: dict[str, Any],
             **extra: Any) -> _Batch | None:
        """Make a batch after ``batch_create_latency``; None when the client hung up meanwhile."""
        if self.options.batch_create_latency > 0:
            with contextlib.suppress(TimeoutError):
                # the body is read: the socket turns readable only when the client goes away
                wait_read(environ["greenagents.sim.socket"].fileno(),
                          timeout=self.options.batch_create_latency)
                return None
        now = time.time()
        prefix = "msgbatch_" if provider == "anthropic" else "batch_"
        batch = _Batch(prefix + uuid.uuid4().hex[:24], provider, rows, now,
                       now + self.options.batch_delay, **extra)
        self.batches[batch.id] = batch
        self.created[f"{provider}_batches"] += 1
        return batch

    def _cancel(self, batch_id: str) -> _Batch:
        batch = self.batches[batch_id]
        if not self._ended(batch) and batch.cancelled is None:
            batch.cancelled = time.time()
            self.created["cancels"] += 1
        return batch

    def _ended(self, batch: _Batch) -> bool:
        return batch.failed is not None or bool(batch.outcome) or \
            (batch.cancelled is None and time.time() >= batch.ready)

    def _finish(self, batch: _Batch) -> bool:
        """Answer every row once the batch is due (or cancelled); True once it has ended."""
        if batch.outcome or batch.failed is not None:
            return True
        if batch.cancelled is not None:
            batch.outcome = {cid: ("canceled", None) for cid, _ in batch.rows}
            return True
        if time.time() < batch.ready:
            return False
        dialect = _ANTHROPIC if batch.provider == "anthropic" else _OPENAI
        for custom_id, body in batch.rows:
            batch.outcome[custom_id] = self._row(dialect, custom_id, body)
            gevent.idle()  # a 50,000-row batch must not stall the other requests
        return True

    def _row(self, dialect: Dialect, custom_id: str, body: Any) -> tuple[str, Any]:
        """One row's fate: ``("ok", response body)``, ``("error", (status, body))`` or expired."""
        roll = random.Random(digest(self.options.seed, "batch-row", custom_id)).random()
        if roll < self.options.batch_row_failure:
            return "error", dialect.error("server_error", "Simulated batch row failure.")
        if roll < self.options.batch_row_failure + self.options.batch_row_expiry:
            return "expired", None
        try:
            chat = dialect.parse(body)
        except InvalidRequest as exc:
            return "error", dialect.error("invalid_request", str(exc))
        if chat.stream:
            return "error", dialect.error("invalid_request", "stream is not supported in batches")
        invalid = random.Random(digest(self.options.seed, "batch-invalid", custom_id)).random() \
            < self.options.faults.get("schema_invalid", 0.0)
        return "ok", dialect.render(chat, compose(chat, self.options.seed, invalid=invalid))

    def _counts(self, batch: _Batch) -> dict[str, int]:
        kinds = [kind for kind, _ in batch.outcome.values()]
        return {kind: kinds.count(kind) for kind in ("ok", "error", "expired", "canceled")}

    # ------------------------------------------------------------------------ OpenAI

    def _upload(self, environ: dict[str, Any]) -> Answered:
        fields = multipart(environ)
        if fields.get("purpose", (None, b""))[1] != b"batch":
            raise InvalidRequest("purpose: this simulator accepts only purpose='batch'")
        if "file" not in fields:
            raise InvalidRequest("file: Field required (multipart/form-data)")
        filename, data = fields["file"]
        limit = self.options.batch_max_bytes or OPENAI_MAX_BYTES
        if len(data) > limit:
            raise InvalidRequest(f"File is too large: {len(data)} bytes; the maximum for "
                             f"purpose 'batch' is {limit} bytes.")
        self.created["files"] += 1
        return 200, self._store_file(data, filename or "upload.jsonl", "batch")

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = "file-" + uuid.uuid4().hex[:24]
        meta = {"id": file_id, "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                "status": "processed", "expires_at": None, "status_details": None}
        self.files[file_id] = (meta, data)
        return meta

    def _openai_create(self, environ: dict[str, Any]) -> Answered:
        body = json_body(environ)
        file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
        if endpoint != "/v1/chat/completions":
            raise InvalidRequest(f"endpoint: {endpoint!r} is not supported here; use "
                             "'/v1/chat/completions'")
        if body.get("completion_window") != "24h":
            raise InvalidRequest("completion_window: must be '24h'")
        if file_id not in self.files:
            raise InvalidRequest(f"input_file_id: no file {file_id!r}")
        rows, problems = input_rows(self.files[file_id][1])
        limit = self.options.batch_max_rows or OPENAI_MAX_ROWS
        if len(rows) > limit:
            problems.append({"code": "too_many_requests", "line": None,
                             "message": f"The batch has {len(rows)} requests; at most {limit} "
                                        "are allowed per batch."})
        batch = self._new("openai", rows, environ, input_file_id=file_id,
                          metadata=body.get("metadata"))
        if batch is None:
            return 499, {}
        if problems:
            batch.failed = problems
        return 200, self._openai_view(batch)

    def _openai_view(self, batch: _Batch) -> dict[str, Any]:
        ended = self._finish(batch)
        total = len(batch.rows)
        counts = self._counts(batch)
        status = "in_progress"
        if batch.failed is not None:
            status, total = "failed", 0
        elif batch.cancelled is not None:
            status = "cancelled"
        elif ended:
            status = "expired" if counts["expired"] else "completed"
            self._openai_files(batch)
        elapsed = min(1.0, (time.time() - batch.created) / max(batch.ready - batch.created, 1e-9))
        done = counts["ok"] if ended else int(total * elapsed)
        stamp = int(batch.created)
        return {
            "id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions",
            "errors": None if batch.failed is None else {"object": "list", "data": batch.failed},
            "input_file_id": batch.input_file_id, "completion_window": "24h", "status": status,
            "output_file_id": batch.files.get("output"), "error_file_id": batch.files.get("error"),
            "created_at": stamp, "in_progress_at": stamp, "expires_at": stamp + _WINDOW_S,
            "completed_at": int(batch.ready) if status == "completed" else None,
            "cancelled_at": int(batch.cancelled) if batch.cancelled else None,
            "failed_at": stamp if batch.failed is not None else None,
            "expired_at": int(batch.ready) if status == "expired" else None,
            "request_counts": {"total": total, "completed": done,
                               "failed": counts["error"] + counts["expired"]},
            "metadata": batch.metadata,
        }

    def _openai_files(self, batch: _Batch) -> None:
        """Write the output and error files of an ended batch (once)."""
        if batch.files:
            return
        output: list[str] = []
        errors: list[str] = []
        for custom_id, (kind, body) in batch.outcome.items():
            line: dict[str, Any] = {"id": "batch_req_" + uuid.uuid4().hex[:24],
                                    "custom_id": custom_id, "response": None, "error": None}
            if kind == "ok":
                line["response"] = {"status_code": 200, "request_id": uuid.uuid4().hex,
                                    "body": body}
                output.append(json.dumps(line))
                continue
            if kind == "error":
                line["response"] = {"status_code": body[0], "request_id": uuid.uuid4().hex,
                                    "body": body[1]}
            else:
                line["error"] = {"code": "batch_expired", "message": "This request could not "
                                 "be executed before the completion window expired."}
            errors.append(json.dumps(line))
        for name, lines in (("output", output), ("error", errors)):
            if lines:
                data = ("\n".join(lines) + "\n").encode()
                batch.files[name] = self._store_file(data, f"{batch.id}_{name}.jsonl",
                                                     "batch_output")["id"]

    # ------------------------------------------------------------------------ Anthropic

    def _anthropic_create(self, environ: dict[str, Any]) -> Answered:
        raw: bytes = environ["wsgi.input"].read()
        limit = self.options.batch_max_bytes or ANTHROPIC_MAX_BYTES
        if len(raw) > limit:
            return 413, {"type": "error", "error": {
                "type": "request_too_large",
                "message": f"Request exceeds the maximum size of {limit} bytes."}}
        body = loads(raw)
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise InvalidRequest("requests: Field required (a non-empty list)")
        rows_limit = self.options.batch_max_rows or ANTHROPIC_MAX_ROWS
        if len(requests) > rows_limit:
            raise InvalidRequest(f"requests: at most {rows_limit} requests per batch, got "
                             f"{len(requests)}")
        rows = []
        for number, item in enumerate(requests):
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str) \
                    or not isinstance(item.get("params"), dict):
                raise InvalidRequest(f"requests.{number}: needs a custom_id string and params object")
            _ANTHROPIC.parse(item["params"])  # Anthropic validates params at creation
            rows.append((item["custom_id"], item["params"]))
        if len({cid for cid, _ in rows}) != len(rows):
            raise InvalidRequest("requests: custom_id values must be unique within a batch")
        batch = self._new("anthropic", rows, environ)
        if batch is None:
            return 499, {}
        return 200, self._anthropic_view(batch, environ)

    def _anthropic_view(self, batch: _Batch, environ: dict[str, Any]) -> dict[str, Any]:
        ended = self._finish(batch)
        counts = self._counts(batch)
        status = "ended" if ended else "canceling" if batch.cancelled else "in_progress"
        host = environ.get("HTTP_HOST", "127.0.0.1")
        return {
            "id": batch.id, "type": "message_batch", "processing_status": status,
            "request_counts": {"processing": 0 if ended else len(batch.rows),
                               "succeeded": counts["ok"], "errored": counts["error"],
                               "canceled": counts["canceled"], "expired": counts["expired"]},
            "created_at": iso(batch.created), "expires_at": iso(batch.created + _WINDOW_S),
            "ended_at": iso(batch.cancelled or batch.ready) if ended else None,
            "cancel_initiated_at": iso(batch.cancelled) if batch.cancelled else None,
            "archived_at": None,
            "results_url": f"http://{host}/v1/messages/batches/{batch.id}/results"
            if ended else None,
        }

    def _anthropic_results(self, batch_id: str) -> Answered:
        batch = self.batches[batch_id]
        if not self._finish(batch):
            raise InvalidRequest(f"Message Batch {batch_id} has not yet ended; its results are not "
                             "available yet.")
        lines = []
        for custom_id, (kind, body) in batch.outcome.items():
            result: dict[str, Any] = {"type": {"ok": "succeeded", "error": "errored"}.get(kind,
                                                                                         kind)}
            if kind == "ok":
                result["message"] = body
            elif kind == "error":
                result["error"] = body[1]
            lines.append(json.dumps({"custom_id": custom_id, "result": result}))
        return 200, ("\n".join(lines) + "\n").encode()


__all__ = ["ANTHROPIC_MAX_BYTES", "ANTHROPIC_MAX_ROWS", "OPENAI_MAX_BYTES", "OPENAI_MAX_ROWS",
           "PREFIXES", "Answered", "BatchStore"]
