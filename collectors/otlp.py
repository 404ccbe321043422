"""Optional OTLP/HTTP export of request spans and of the component's Prometheus metrics.

Environment: OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://otel-collector:4318) turns it on; the
standard OTEL_* variables of opentelemetry-sdk apply (OTEL_METRIC_EXPORT_INTERVAL, default
60000 ms, sets how often metrics go out; they also go out once more on shutdown).

Traces: a request's span continues the incoming W3C `traceparent` (extracted with the SDK's
TraceContext propagator); without one, the span gets the trace id the middleware generated and
logs, so logs, `/_trace/{id}` and exported traces join on one id. Span attributes are only the
route template, the (clamped) method and the status code.

Metrics: the prometheus_client registry that `/_metrics` serves is read at each export and
converted as is, so OTLP carries the catalog's metrics with the same names, labels and buckets.
Mapping: a counter goes out as a cumulative monotonic Sum named like its Prometheus series
(`core_http_requests_total`), a histogram as a cumulative explicit-bucket Histogram named like the
catalog metric (`core_http_request_duration_seconds`, bounds = the catalog's buckets, without
+Inf), a gauge as a Gauge; labels become attributes with the same keys, `_created` becomes the
start time. No unit is set, so the collector's Prometheus exporter gives back the same names.
Nothing happens per request for metrics: the registry is read on the export thread.

Export runs on background threads: a failing collector is logged by the SDK, never fails a request.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

SCOPE = InstrumentationScope("vigia.collectors")
PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}
CUMULATIVE = AggregationTemporality.CUMULATIVE


class RequestTraceIds(RandomIdGenerator):
    """Random ids, except that a root span takes the trace id `start_span` was given."""

    def __init__(self):
        self.pending = threading.local()

    def generate_trace_id(self) -> int:
        trace_id = getattr(self.pending, "trace_id", 0)
        self.pending.trace_id = 0
        return trace_id or super().generate_trace_id()


def export_interval_seconds() -> float:
    """OTEL_METRIC_EXPORT_INTERVAL (milliseconds) as the SDK reads it; 60 s when unset or invalid."""
    try:
        millis = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", 60000))
    except ValueError:
        millis = 60000
    return (millis if millis > 0 else 60000) / 1000


def _key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def registry_metrics(registry, resource: Resource, start_ns: int) -> MetricsData:
    """Counters, gauges and histograms of a prometheus_client registry as OTLP metrics data."""
    now = time.time_ns()
    metrics = []
    for family in registry.collect():
        created = {_key(s.labels): int(s.value * 1e9) for s in family.samples if s.name == family.name + "_created"}
        if family.type == "counter":
            name = family.name + "_total"
            points = [NumberDataPoint(s.labels, created.get(_key(s.labels), start_ns), now, s.value)
                      for s in family.samples if s.name == name]
            data = Sum(points, CUMULATIVE, is_monotonic=True)
        elif family.type == "gauge":
            name = family.name
            points = [NumberDataPoint(s.labels, start_ns, now, s.value) for s in family.samples if s.name == name]
            data = Gauge(points)
        elif family.type == "histogram":
            name = family.name
            points = _histogram_points(family, created, start_ns, now)
            data = Histogram(points, CUMULATIVE)
        else:  # the catalog has no other types
            continue
        if points:
            metrics.append(Metric(name=name, description=family.documentation, unit="", data=data))
    scope_metrics = ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url="")
    return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope_metrics], schema_url="")])


def _histogram_points(family, created: dict, start_ns: int, now: int) -> list[HistogramDataPoint]:
    series: dict[tuple, dict] = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        one = series.setdefault(_key(labels), {"labels": labels, "buckets": [], "sum": 0.0})
        if s.name == family.name + "_bucket":
            one["buckets"].append((float(s.labels["le"]), int(s.value)))
        elif s.name == family.name + "_sum":
            one["sum"] = s.value
    points = []
    for key, one in series.items():
        buckets = sorted(one["buckets"])  # cumulative counts by upper bound, +Inf last
        if not buckets:
            continue
        counts = [count - previous for (_, count), (_, previous) in zip(buckets, [(0, 0)] + buckets[:-1])]
        bounds = [bound for bound, _ in buckets if bound != math.inf]
        points.append(HistogramDataPoint(
            attributes=one["labels"], start_time_unix_nano=created.get(key, start_ns), time_unix_nano=now,
            count=buckets[-1][1], sum=one["sum"], bucket_counts=counts, explicit_bounds=bounds,
            min=None, max=None))  # Prometheus keeps no min/max: left unset in OTLP
    return points


class OtlpExport:
    def __init__(self, component: str, node: str, registry):
        self.resource = Resource.create({"service.name": component, "service.instance.id": node})
        self.ids = RequestTraceIds()
        self.tracer_provider = TracerProvider(resource=self.resource, id_generator=self.ids)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.tracer_provider.get_tracer(SCOPE.name)
        self.registry = registry
        self.metric_exporter = OTLPMetricExporter()
        self.start_ns = time.time_ns()
        self.export_lock = threading.Lock()
        self.stopping = threading.Event()
        self.interval = export_interval_seconds()
        self.thread = threading.Thread(target=self._export_periodically, name="vigia-otlp-metrics", daemon=True)
        self.thread.start()

    def start_span(self, scope, trace_id: str):
        """A server span under the request's `traceparent`, else a root span with `trace_id`."""
        carrier = {TRACE_HEADERS[key]: value.decode("latin-1") for key, value in scope["headers"] if key in TRACE_HEADERS}
        parent = PROPAGATOR.extract(carrier, Context()) if carrier else Context()
        if not get_current_span(parent).get_span_context().is_valid:  # a root span, on the middleware's trace id
            try:
                self.ids.pending.trace_id = int(trace_id, 16) if len(trace_id) == 32 else 0
            except ValueError:
                self.ids.pending.trace_id = 0
        return self.tracer.start_span(scope["type"], context=parent, kind=SpanKind.SERVER)

    def end_span(self, span, route: str, method: str, status: int) -> None:
        """`route` a route template and `method` already clamped to the catalog's set."""
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.request.method", method)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def export_metrics(self) -> None:
        try:
            data = registry_metrics(self.registry, self.resource, self.start_ns)
            with self.export_lock:
                self.metric_exporter.export(data)
        except Exception:  # noqa: BLE001 - export must never take the service down
            log.exception("vigia: OTLP metrics export failed")

    def _export_periodically(self) -> None:
        while not self.stopping.wait(self.interval):
            self.export_metrics()
        self.export_metrics()  # the last values, on shutdown

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.export_metrics()

    def shutdown(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.metric_exporter.shutdown()
        self.tracer_provider.shutdown()
