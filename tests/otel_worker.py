"""A Celery worker app with the OpenTelemetry SDK exporting to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(set by the test), then greenagents' ready-made worker app: what a user's own app module does.

The SDK is set up when the worker starts (``worker_init``), not on import: pytest imports this
module too (``--doctest-modules``), and its process must keep its own tracer provider.
"""

import greenagents.monkey  # noqa: F401  first: patch before anything below imports ssl

# isort: split

from typing import Any

from celery import signals

from greenagents.celery.worker import app

__all__ = ["app"]


@signals.worker_init.connect
def _tracing(**_: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))  # each span at once
    trace.set_tracer_provider(provider)
