"""Optional OTLP/HTTP export of spans and request metrics (the blueprint's gateway path).

Environment: OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://otel-collector:4318) turns it on; the
standard OTEL_* variables of opentelemetry-sdk apply. Export runs on the SDK's background
threads (BatchSpanProcessor, PeriodicExportingMetricReader): a failing collector is logged by
the SDK and never fails a request. Span attributes are only route, method and status.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


class OtlpExport:
    def __init__(self, component: str, node: str, export_interval_ms: int = 5000):
        resource = Resource.create({"service.name": component, "service.instance.id": node})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.tracer_provider.get_tracer("vigia.collectors")
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=export_interval_ms)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self.meter_provider.get_meter("vigia.collectors")
        self.requests = meter.create_counter(f"{component}.http.requests", description="HTTP requests")
        self.duration = meter.create_histogram(f"{component}.http.request.duration", unit="s")

    def start_span(self, scope):
        return self.tracer.start_span(scope.get("method", "WS"), kind=SpanKind.SERVER)

    def end_span(self, span, route: str, status: int, elapsed: float) -> None:
        method = span.name
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.request.method", method)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        attrs = {"http.route": route, "http.response.status_code": status}
        self.requests.add(1, attrs)
        self.duration.record(elapsed, attrs)

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
