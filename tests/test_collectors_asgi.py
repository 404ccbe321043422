"""The middleware and debug endpoints, over real HTTP where it matters: ids echoed, route
templates as labels, ErrorTokens instead of stack traces, /_metrics clean for promtool.
OTLP export is tested in test_collectors_otlp.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from collectors import ApiError, Observability, instrument
from collectors.audit import audited, slow
from collectors.context import current


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

    @app.post("/v1/tools/{tool}")
    async def tool_call(tool: str, body: dict):
        ctx = current()
        ctx.tenant, ctx.tool = "globex", tool  # as a handler does once it has verified who calls
        if tool == "mystery":
            raise ApiError("NOT_A_TOKEN")
        return {"tool": tool}

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


def test_the_frameworks_own_errors_are_error_tokens_that_never_echo_the_input(client):
    c, obs = client
    invalid = c.post("/v1/tools/search_docs", content=b'{"email": "alice@example.com"', headers={"x-correlation-id": "c-422"})
    assert invalid.status_code == 400
    assert invalid.json() == {"error": {"token": "INVALID_ARGUMENT", "correlation_id": "c-422"}}
    assert c.get("/nowhere").json()["error"]["token"] == "NOT_FOUND"
    wrong_method = c.delete("/v1/items/1")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["token"] == "METHOD_NOT_ALLOWED"
    assert sample(obs, "core_http_requests_total", {"route": "unmatched", "method": "GET", "code": "404"}) == 1


def test_a_token_outside_the_vocabulary_is_answered_internal(client):
    c, _ = client
    r = c.post("/v1/tools/mystery", json={}, headers={"x-correlation-id": "c-odd"})
    assert r.status_code == 500 and r.json() == {"error": {"token": "INTERNAL", "correlation_id": "c-odd"}}


def test_the_log_names_the_tenant_and_tool_the_handler_established(client, tmp_path):
    c, obs = client
    c.post("/v1/tools/search_docs", json={}, headers={"x-tenant": "acme", "x-correlation-id": "c-tool"})
    obs.logger.flush()
    [record] = [json.loads(line) for p in tmp_path.rglob("logs/**/*.ndjson") for line in p.read_text().splitlines()
                if '"c-tool"' in line]
    assert record["tenant"] == "globex" and record["tool"] == "search_docs" and record["route"] == "/v1/tools/{tool}"


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
    assert sample(obs, "core_http_requests_total", {"route": "/_flags", "method": "POST", "code": "400"}) == 1


def test_inject_5xx_answers_internal_for_that_share_of_requests(client):
    c, obs = client
    obs.flags.update(inject_5xx=1.0)
    assert c.get("/v1/items/1").status_code == 500
    assert sample(obs, "core_http_requests_total", {"route": "/v1/items/{item_id}", "method": "GET", "code": "500"}) == 1
    assert c.post("/_flags", json={"inject_5xx": 0.0}, headers={"x-admin-token": "admin-secret"}).status_code == 200
    assert c.get("/v1/items/1").status_code == 200


def test_inject_latency_delays_requests_past_the_slo_but_never_the_debug_endpoints(client):
    c, obs = client
    obs.flags.update(inject_latency=1.0)
    assert c.get("/v1/items/1").status_code == 200
    assert c.get("/_health").status_code == 200
    obs.flags.update(inject_latency=0.0)
    assert sample(obs, "core_http_request_duration_seconds_bucket", {"route": "/v1/items/{item_id}", "le": "0.3"}) == 0
    assert sample(obs, "core_http_request_duration_seconds_bucket", {"route": "/v1/items/{item_id}", "le": "1.0"}) == 1
    assert sample(obs, "core_http_request_duration_seconds_bucket", {"route": "/_health", "le": "0.3"}) == 1


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


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_hung_async_check_never_stalls_health_and_stops_with_the_app(catalog, tmp_path):
    app, obs = make_app(catalog, tmp_path)
    obs.health.interval_s, obs.health.timeout_s = 0.05, 30.0
    state = {"started": 0, "cancelled": False}

    async def hung() -> tuple[bool, str]:
        state["started"] += 1
        try:
            await asyncio.Event().wait()  # a dependency that never answers
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        return True, "never"

    async def answers() -> tuple[bool, str]:
        return True, "fine"

    obs.health.add_async_check("peer", hung)
    obs.health.add_async_check("db", answers)
    with TestClient(app) as c:
        wait_for(lambda: c.get("/_health").json()["checks"]["db"]["detail"] == "fine")  # not held back by the hung one
        assert state["started"] == 1 and not state["cancelled"]  # still hung, and still answered:
        r = c.get("/_health")
        assert r.status_code == 503
        assert r.json()["checks"]["peer"] == {"ok": False, "detail": "not checked yet"}
        assert c.get("/_health?probe=live").status_code == 200
    assert state["cancelled"]  # shutdown cancelled the background checks


def test_an_async_check_past_its_timeout_fails_and_is_run_again(catalog, tmp_path):
    app, obs = make_app(catalog, tmp_path)
    obs.health.interval_s, obs.health.timeout_s = 0.05, 0.1
    runs = []

    async def slow_peer() -> tuple[bool, str]:
        runs.append(1)
        await asyncio.sleep(10)
        return True, "late"

    obs.health.add_async_check("peer", slow_peer)
    with TestClient(app) as c:
        wait_for(lambda: len(runs) >= 2)
        assert c.get("/_health").json()["checks"]["peer"] == {"ok": False, "detail": "no answer within 0.1s"}


def test_liveness_stays_200_while_a_dependency_is_down(catalog, tmp_path):
    app, obs = make_app(catalog, tmp_path)
    obs.health.interval_s = 0.05

    async def peer_down() -> tuple[bool, str]:
        raise ConnectionRefusedError("peer down")

    obs.health.add_async_check("peer", peer_down)
    obs.health.add_check("cache", lambda: (True, "warm"))
    with TestClient(app) as c:
        wait_for(lambda: c.get("/_health").json()["checks"]["peer"]["detail"] != "not checked yet")
        ready = c.get("/_health")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["checks"] == {"cache": {"ok": True, "detail": "warm"},
                                          "peer": {"ok": False, "detail": "ConnectionRefusedError"}}
        live = c.get("/_health?probe=live")
        assert live.status_code == 200 and live.json() == {"status": "ok", "live": True}
        assert c.get("/_health?probe=ready").status_code == 503
        assert c.get("/_health?probe=maybe").json()["error"]["token"] == "INVALID_ARGUMENT"


def test_async_reload_hooks_are_awaited_in_order_before_the_trail(catalog, tmp_path, monkeypatch):
    app, obs = make_app(catalog, tmp_path)
    order = []
    append = obs.trails.append

    def trail(kind, *args, **kwargs):
        order.append(kind)
        return append(kind, *args, **kwargs)

    async def refresh(stage: str) -> None:
        order.append(f"async start {stage}")
        await asyncio.sleep(0.05)
        order.append("async end")

    monkeypatch.setattr(obs.trails, "append", trail)
    obs.reload_hooks.extend([lambda stage: order.append("sync"), refresh, lambda stage: order.append("sync after")])
    with TestClient(app) as c:
        assert c.post("/_reload?stage=next", headers={"x-admin-token": "admin-secret"}).status_code == 200
    assert order == ["sync", "async start next", "async end", "sync after", "ops.reload"]


def test_an_async_reload_hook_that_refuses_leaves_no_trail(catalog, tmp_path):
    app, obs = make_app(catalog, tmp_path)

    async def refuse(stage: str) -> None:
        await asyncio.sleep(0)
        raise ApiError("INVALID_ARGUMENT")

    obs.reload_hooks.append(refuse)
    with TestClient(app) as c:
        assert c.post("/_reload?stage=next", headers={"x-admin-token": "admin-secret"}).status_code == 400
    assert '"kind":"ops.reload"' not in "".join(p.read_text() for p in tmp_path.rglob("audit/**/*.ndjson"))


def test_the_metrics_page_passes_promtool_check_metrics(client):
    c, _ = client
    c.get("/v1/items/1")
    c.get("/v1/items/boom")
    page = c.get("/_metrics").text
    proc = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

