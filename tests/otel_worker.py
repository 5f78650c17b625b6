"""A Celery worker app with the OpenTelemetry SDK exporting to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(set by the test), then greenagents' ready-made worker app: what a user's own app module does."""

import greenagents.monkey  # noqa: F401  first: patch before anything below imports ssl

# isort: split

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))  # each span at once: tests
trace.set_tracer_provider(provider)

from greenagents.celery.worker import app  # noqa: E402

__all__ = ["app"]
