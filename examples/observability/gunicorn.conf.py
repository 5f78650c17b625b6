"""gunicorn with traces and metrics: gevent workers, Prometheus multiprocess mode, OTLP export.

``gunicorn -c examples/observability/gunicorn.conf.py``; see README.md beside it.
"""

import greenagents.monkey  # noqa: F401, I001  # FIRST line: patch before anything imports ssl

import os
import tempfile
from pathlib import Path
from typing import Any

# Prometheus multiprocess mode: each worker writes its metrics to files in this directory, and
# /metrics adds them up. It must exist and be empty before the workers start (a fresh temp dir
# unless you give one), and be set before prometheus_client is imported anywhere.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="greenagents-metrics-"))
os.environ.setdefault("GREENAGENTS_PROMETHEUS", "1")
os.environ.setdefault("GREENAGENTS_OTEL", "1")

wsgi_app = "app:app"
chdir = str(Path(__file__).resolve().parent)
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = 1000


def post_fork(server: Any, worker: Any) -> None:
    """In each worker: the OpenTelemetry SDK, exporting over OTLP/HTTP to
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4318``). After the fork, so the
    exporter's thread belongs to the worker."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "review-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def worker_exit(server: Any, worker: Any) -> None:
    """Send the spans still buffered before the worker goes."""
    from opentelemetry import trace

    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if shutdown is not None:
        shutdown()


def child_exit(server: Any, worker: Any) -> None:
    """In the master: a dead worker's live gauges (calls in flight) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
