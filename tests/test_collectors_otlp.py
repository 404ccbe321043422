"""OTLP/HTTP export against an in-test receiver that decodes the protobuf: spans continue the
incoming W3C trace (or carry the trace id the middleware logs), attributes are closed-set only,
and the catalog's metrics go out with their Prometheus names, labels and buckets."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from collectors import Observability, instrument

INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING_SPAN = "b7ad6b7169203331"


@pytest.fixture()
def receiver(monkeypatch):
    """An OTLP/HTTP endpoint keeping the raw bodies posted to /v1/traces and /v1/metrics."""
    received: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.setdefault(self.path, []).append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    yield received
    server.shutdown()
    server.server_close()


def make_app(catalog, tmp):
    obs = Observability.from_catalog(catalog, "core", tmp)
    app = FastAPI()

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str):
        obs.metrics.labels("core_db_query_seconds", op="select").observe(0.002)
        obs.metrics.labels("core_rate_limit_hits_total", bucket="read", tenant="acme").inc()
        return {"id": item_id}

    instrument(app, obs)
    return app, obs


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def decode_spans(bodies):
    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return spans


def decode_metrics(body):
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    (resource_metrics,) = request.resource_metrics
    resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
    return resource, {m.name: m for sm in resource_metrics.scope_metrics for m in sm.metrics}


def attributes(point_or_span):
    return {a.key: a.value for a in point_or_span.attributes}


def test_spans_continue_the_w3c_trace_and_catalog_metrics_go_out_over_otlp_http(catalog, tmp_path, receiver):
    app, obs = make_app(catalog, tmp_path)
    with TestClient(app) as c:
        traced = c.get("/v1/items/42?token=s3cret", headers={
            "traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01", "x-api-key": "sk_live_abcdef"})
        untraced = c.get("/v1/items/7")
        assert traced.status_code == untraced.status_code == 200
        # Periodic export, before any shutdown: the interval comes from OTEL_METRIC_EXPORT_INTERVAL.
        assert wait_for(lambda: receiver["/v1/metrics"]), "no periodic metrics export"
    generated = next(t for t, meta in obs.traces if meta[0] == untraced.headers["x-correlation-id"])
    obs.close()  # flushes spans and sends the metrics one last time

    spans = {s.trace_id.hex(): s for s in decode_spans(receiver["/v1/traces"])}
    continued = spans[INCOMING_TRACE]
    assert continued.parent_span_id.hex() == INCOMING_SPAN
    assert continued.name == "GET /v1/items/{item_id}"
    root = spans[generated]  # the trace id the middleware generated, logs and serves at /_trace/{id}
    assert root.parent_span_id == b""
    for span in (continued, root):
        attrs = attributes(span)
        assert set(attrs) == {"http.route", "http.request.method", "http.response.status_code"}
        assert attrs["http.route"].string_value == "/v1/items/{item_id}"
        assert attrs["http.request.method"].string_value == "GET"
        assert attrs["http.response.status_code"].int_value == 200
    assert not [body for body in receiver["/v1/traces"] if b"s3cret" in body or b"sk_live" in body or b"/v1/items/42" in body]

    resource, metrics = decode_metrics(receiver["/v1/metrics"][-1])
    assert resource["service.name"] == "core"
    # Every catalog metric of the component goes out under its catalog (= Prometheus) name.
    assert {m.name for m in catalog.metrics_of("core")} <= set(metrics)

    requests = metrics["core_http_requests_total"].sum
    assert requests.is_monotonic and requests.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    by_labels = {tuple(sorted((k, v.string_value) for k, v in attributes(p).items())): p.as_double for p in requests.data_points}
    assert by_labels[(("code", "200"), ("method", "GET"), ("route", "/v1/items/{item_id}"))] == 2

    bounds = list(catalog.bucket_bounds(catalog.http_metric("core", "duration")))
    duration = metrics["core_http_request_duration_seconds"].histogram
    assert duration.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    (point,) = [p for p in duration.data_points if attributes(p)["route"].string_value == "/v1/items/{item_id}"]
    assert set(attributes(point)) == {"route"}
    assert list(point.explicit_bounds) == bounds
    assert len(point.bucket_counts) == len(bounds) + 1 and sum(point.bucket_counts) == point.count == 2
    assert point.start_time_unix_nano > 0 and point.time_unix_nano >= point.start_time_unix_nano

    (db,) = metrics["core_db_query_seconds"].histogram.data_points
    assert {k: v.string_value for k, v in attributes(db).items()} == {"op": "select"}
    assert db.count == 2 and db.bucket_counts[0] == 2  # 2 ms falls in the first bucket (5 ms)
    (hits,) = metrics["core_rate_limit_hits_total"].sum.data_points
    assert {k: v.string_value for k, v in attributes(hits).items()} == {"bucket": "read", "tenant": "acme"}
    assert hits.as_double == 2


def test_no_exporter_and_no_span_when_the_endpoint_is_unset(catalog, tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    app, obs = make_app(catalog, tmp_path)
    assert obs.otlp is None
    with TestClient(app) as c:
        assert c.get("/v1/items/1").status_code == 200
    obs.close()
