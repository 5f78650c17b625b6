"""A tiny OTLP/HTTP trace receiver on 127.0.0.1, for tests: it decodes what exporters POST."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from gevent.pywsgi import WSGIServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Receiver:
    """Spans received, as ``{name, trace_id, span_id, parent_id, attributes}`` dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.posts = 0
        self.endpoint = ""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        if environ.get("HTTP_CONTENT_ENCODING") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        self.posts += 1
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(), "parent_id": span.parent_span_id.hex(),
                        "attributes": {a.key: _value(a.value) for a in span.attributes}})
        reply = ExportTraceServiceResponse().SerializeToString()
        start_response("200 OK", [("Content-Type", "application/x-protobuf"),
                                  ("Content-Length", str(len(reply)))])
        return [reply]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A running receiver; its ``endpoint`` is the full traces URL for an OTLPSpanExporter."""
    app = Receiver()
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    app.endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
    try:
        yield app
    finally:
        server.stop()
