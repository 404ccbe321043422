"""The middleware and debug endpoints, over real HTTP where it matters: ids echoed, route
templates as labels, ErrorTokens instead of stack traces, /_metrics clean for promtool, OTLP out."""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collectors import ApiError, Observability, instrument
from collectors.audit import audited, slow


def make_app(catalog, tmp, component="core"):
    obs = Observability.from_catalog(catalog, component, tmp)
    obs.flags.update(sampling_success=1.0)
    app = FastAPI()

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str):
        if item_id == "boom":
            raise RuntimeError("database password=hunter2 in a stack trace")
        if item_id == "busy":
            raise ApiError("RATE_LIMIT", retry_after_ms=1500)
        return {"id": item_id}

    @app.post("/v1/items")
    @audited(obs, "gateway.request_min", lambda result, *a, **k: {"route": "/v1/items", "method": "POST", "cost": 1})
    async def create():
        with slow(obs, "create", threshold_ms=0):
            return {"created": True}

    instrument(app, obs, admin_token="admin-secret")
    return app, obs


@pytest.fixture()
def client(catalog, tmp_path):
    app, obs = make_app(catalog, tmp_path)
    with TestClient(app) as c:
        yield c, obs


def sample(obs, name, labels):
    return obs.metrics.registry.get_sample_value(name, labels) or 0


def test_the_correlation_id_is_echoed_or_generated(client):
    c, _ = client
    assert c.get("/v1/items/1", headers={"x-correlation-id": "req-123"}).headers["x-correlation-id"] == "req-123"
    generated = c.get("/v1/items/1").headers["x-correlation-id"]
    assert len(generated) == 16
    traced = c.get("/v1/items/1", headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert traced.headers["x-correlation-id"] == "4bf92f3577b34da6"


def test_metrics_use_route_templates_never_raw_paths(client):
    c, obs = client
    for i in range(3):
        c.get(f"/v1/items/{i}")
    c.get("/some/raw/path/42")
    assert sample(obs, "core_http_requests_total", {"route": "/v1/items/{item_id}", "method": "GET", "code": "200"}) == 3
    assert sample(obs, "core_http_requests_total", {"route": "unmatched", "method": "GET", "code": "404"}) == 1
    assert sample(obs, "core_http_request_duration_seconds_count", {"route": "/v1/items/{item_id}"}) == 3


def test_a_method_outside_the_catalog_is_answered_and_counted_as_other(client):
    c, obs = client
    for method in ("PATCH", "BREW"):
        assert c.request(method, "/v1/items/1").status_code == 405
    assert sample(obs, "core_http_requests_total", {"route": "/v1/items/{item_id}", "method": "OTHER", "code": "405"}) == 2
    assert c.get("/_trace/none").status_code == 404


def test_an_unhandled_exception_becomes_an_internal_error_token(client):
    c, obs = client
    r = c.get("/v1/items/boom", headers={"x-correlation-id": "c-500"})
    assert r.status_code == 500
    assert r.json() == {"error": {"token": "INTERNAL", "correlation_id": "c-500"}}
    assert "hunter2" not in r.text and "Traceback" not in r.text
    assert sample(obs, "core_http_requests_total", {"route": "/v1/items/{item_id}", "method": "GET", "code": "500"}) == 1


def test_rate_limit_carries_retry_after_ms_and_the_header(client):
    c, _ = client
    r = c.get("/v1/items/busy")
    assert r.status_code == 429
    assert r.json()["error"]["retry_after_ms"] == 1500
    assert r.headers["retry-after"] == "2"


def test_reload_needs_the_admin_token_and_writes_a_trail(client, tmp_path):
    c, _ = client
    assert c.post("/_reload?stage=next").status_code == 401
    assert c.post("/_reload?stage=next", headers={"x-admin-token": "wrong"}).json()["error"]["token"] == "UNAUTHORIZED"
    assert c.post("/_reload?stage=next", headers={"x-admin-token": "admin-secret"}).status_code == 200
    trails = [p.read_text() for p in tmp_path.rglob("audit/**/*.ndjson")]
    assert '"kind":"ops.reload"' in "".join(trails) and "admin-secret" not in "".join(trails)


def test_flags_change_at_runtime_and_bad_values_change_nothing(client):
    c, obs = client
    assert c.post("/_flags", json={"spike": True}).status_code == 401
    assert c.post("/_flags", json={"spike": True}, headers={"x-admin-token": "admin-secret"}).json()["spike"] is True
    bad = c.post("/_flags", json={"inject_5xx": 2, "chaos": True}, headers={"x-admin-token": "admin-secret"})
    assert bad.status_code == 400 and obs.flags.chaos is False


def test_inject_5xx_answers_internal_for_that_share_of_requests(client):
    c, obs = client
    obs.flags.update(inject_5xx=1.0)
    assert c.get("/v1/items/1").status_code == 500
    assert c.post("/_flags", json={"inject_5xx": 0.0}, headers={"x-admin-token": "admin-secret"}).status_code == 200
    assert c.get("/v1/items/1").status_code == 200


def test_trace_lookup_returns_metadata_only(client):
    c, _ = client
    c.get("/v1/items/7", headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    found = c.get("/_trace/0af7651916cd43dd8448eb211c80319c").json()
    assert found == {"trace_id": "0af7651916cd43dd8448eb211c80319c", "component": "core", "correlation_id": "0af7651916cd43dd",
                     "route": "/v1/items/{item_id}", "method": "GET", "code": 200, "latency_ms": found["latency_ms"]}
    assert c.get("/_trace/unknown").status_code == 404


def test_the_audit_decorator_and_slow_warning_write_minimal_records(client, tmp_path):
    c, obs = client
    assert c.post("/v1/items", headers={"x-tenant": "acme"}).status_code == 200
    obs.logger.flush()
    trails = "".join(p.read_text() for p in tmp_path.rglob("audit/**/*.ndjson"))
    assert '"kind":"gateway.request_min"' in trails and '"actor":"acme"' in trails
    assert sample(obs, "vigia_slow_operations_total", {"operation": "create"}) == 1


def test_health_reports_each_dependency_and_readiness(client):
    c, obs = client
    assert c.get("/_health").json()["ready"] is True
    obs.health.add_check("db", lambda: (False, "locked"))
    r = c.get("/_health")
    assert r.status_code == 503 and r.json()["checks"]["db"] == {"ok": False, "detail": "locked"}


def test_the_metrics_page_passes_promtool_check_metrics(client):
    c, _ = client
    c.get("/v1/items/1")
    c.get("/v1/items/boom")
    page = c.get("/_metrics").text
    proc = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_spans_go_out_over_otlp_http_when_the_endpoint_is_set(catalog, tmp_path, monkeypatch):
    received: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    app, obs = make_app(catalog, tmp_path)
    with TestClient(app) as c:
        c.get("/v1/items/42")
    obs.otlp.flush()
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)
    obs.close()
    server.shutdown()
    request = ExportTraceServiceRequest()
    request.ParseFromString(received[0])
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert "GET /v1/items/{item_id}" in {s.name for s in spans}
    attrs = {a.key: a.value for s in spans for a in s.attributes}
    assert attrs["http.route"].string_value == "/v1/items/{item_id}"
