"""Formats of the simulated Batch APIs that hold no state: request bodies in, list pages and
timestamps out. :mod:`greenagents.testing.batches` keeps the files and batches.

>>> page([{"id": "a"}], anthropic=True)["last_id"]
'a'
>>> input_rows(b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {}}')
([('1', {})], [])
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from datetime import datetime, timezone
from typing import Any

from greenagents.testing.shapes import InvalidRequest

__all__ = ["input_rows", "iso", "json_body", "loads", "multipart", "page"]


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat().replace("+00:00", "Z")


def page(data: list[dict[str, Any]], *, anthropic: bool) -> dict[str, Any]:
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    if anthropic:
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}
    return {"object": "list", "data": data, "has_more": False, "first_id": first,
            "last_id": last}


def loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request ({exc}).") from None


def json_body(environ: dict[str, Any]) -> dict[str, Any]:
    body = loads(environ["wsgi.input"].read())
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def multipart(environ: dict[str, Any]) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    kind = environ.get("CONTENT_TYPE", "")
    if not kind.startswith("multipart/form-data"):
        raise InvalidRequest("Uploads must be multipart/form-data with 'purpose' and 'file' fields.")
    raw: bytes = environ["wsgi.input"].read()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def input_rows(data: bytes) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The rows of an input file, and the problems that fail the batch (as OpenAI reports them)."""
    rows: list[tuple[str, Any]] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            problems.append({"code": "invalid_json_line", "line": number,
                             "message": "This line is not parseable as valid JSON."})
            continue
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or item.get("method") != "POST" \
                or item.get("url") != "/v1/chat/completions" or not isinstance(item.get("body"),
                                                                              dict):
            problems.append({"code": "invalid_request", "line": number, "message":
                             "Each line needs custom_id, method 'POST', url "
                             "'/v1/chat/completions' and a body object."})
            continue
        if custom_id in seen:
            problems.append({"code": "duplicate_custom_id", "line": number,
                             "message": f"The custom_id {custom_id!r} is not unique."})
        seen.add(custom_id)
        rows.append((custom_id, item["body"]))
    if not rows and not problems:
        problems.append({"code": "empty_file", "line": None, "message": "The file has no requests."})
    return rows, problems
