"""The reference services in process, on a clock the test moves: policy's and core's bucket
arithmetic to the millisecond, quota reloads, health probes, reconnect timing, session eviction,
trails of sensitive operations, and how a peer's error is relayed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from collectors.errortoken import ErrorTokens
from services import core, gateway, office, policy
from services.common import downstream_error
from tests.helpers import free_port

ADMIN = {"x-admin-token": "test-admin"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def metric(client: TestClient, name: str, **labels) -> float:
    total = 0.0
    for family in text_string_to_metric_families(client.get("/_metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def trails(data_dir: Path, kind: str) -> list[dict]:
    records = [json.loads(line) for path in sorted(data_dir.rglob("audit/**/*.ndjson"))
               for line in path.read_text().splitlines()]
    return [r for r in records if r["kind"] == kind]


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# policy


@pytest.fixture
def policy_client(catalog, tmp_path):
    clock = Clock()
    with TestClient(policy.create_app(catalog, tmp_path, admin_token=ADMIN["x-admin-token"], clock=clock)) as client:
        yield client, clock


def evaluate(client: TestClient, bucket: str = "tool", cost: float = 1, tenant: str = "acme") -> dict:
    return client.post("/v1/eval", json={"tenant": tenant, "bucket": bucket, "cost": cost}).json()


def set_flags(client: TestClient, **flags) -> None:
    client.post("/_flags", json=flags, headers=ADMIN).raise_for_status()


def test_an_induced_quota_answers_backpressure_with_the_time_until_a_token_is_back(policy_client):
    client, clock = policy_client
    set_flags(client, quota_override=2.0)  # 2 tokens/s, burst 2
    assert [evaluate(client)["decision"] for _ in range(2)] == ["allow", "allow"]
    assert evaluate(client) == {"decision": "backpressure", "retry_after_ms": 500}
    clock.now += 0.1
    assert evaluate(client) == {"decision": "backpressure", "retry_after_ms": 400}
    clock.now += 0.4
    assert evaluate(client) == {"decision": "allow"}
    assert metric(client, "policy_eval_total", decision="backpressure") == 2
    assert metric(client, "policy_eval_total") == 5  # one evaluation per request


def test_clearing_the_override_restores_the_configured_capacity(policy_client):
    client, clock = policy_client
    set_flags(client, quota_override=2.0)
    evaluate(client)
    assert client.get("/v1/buckets/acme").json()["global"]["burst"] == 2
    set_flags(client, quota_override=None)
    evaluate(client)
    clock.now += 10
    assert client.get("/v1/buckets/acme").json()["global"] == {"tokens": 3000, "rate": 1500, "burst": 3000}


def test_a_tenant_out_of_tokens_is_rate_limited_until_its_bucket_refills(policy_client):
    client, clock = policy_client
    assert [evaluate(client, "write", 40)["decision"] for _ in range(2)] == ["allow", "allow"]  # 40/s, burst 80
    assert evaluate(client, "write", 40) == {"decision": "rate_limit", "retry_after_ms": 1000}
    assert client.get("/v1/buckets/acme").json()["global"]["tokens"] == 2920  # the refusal took no global tokens
    clock.now += 0.25
    assert evaluate(client, "write", 40) == {"decision": "rate_limit", "retry_after_ms": 750}


def test_a_cost_no_bucket_can_ever_hold_is_denied_not_deferred(policy_client):
    client, _ = policy_client
    assert evaluate(client, "write", 100) == {"decision": "deny"}  # write burst is 80
    set_flags(client, quota_override=0.5)  # global burst 1
    assert evaluate(client, "tool", 5) == {"decision": "deny"}
    assert evaluate(client, "tool", 1) == {"decision": "allow"}  # the denials took nothing
    assert evaluate(client, tenant="mallory") == {"decision": "deny"}


def test_reload_reads_the_quotas_file_and_a_bad_one_changes_nothing(policy_client, tmp_path):
    client, _ = policy_client
    quotas = tmp_path / policy.QUOTAS_FILE
    quotas.write_text(json.dumps({"write": [1, 2]}))
    assert client.post("/_reload?stage=next", headers=ADMIN).status_code == 200
    assert client.get("/v1/buckets/acme").json()["buckets"]["write"] == {"tokens": 2, "rate": 1, "burst": 2}
    quotas.write_text(json.dumps({"write": [0, 2]}))
    refused = client.post("/_reload?stage=next", headers=ADMIN)
    assert refused.status_code == 400 and refused.json()["error"]["token"] == "INVALID_ARGUMENT"
    assert client.get("/v1/buckets/acme").json()["buckets"]["write"]["rate"] == 1
    quotas.unlink()
    assert client.post("/_reload?stage=next", headers=ADMIN).status_code == 200
    assert client.get("/v1/buckets/acme").json()["buckets"]["write"]["burst"] == 80
    assert len(trails(tmp_path, "ops.reload")) == 2


def test_issuing_a_token_is_audited_as_the_tenants_login(policy_client, tmp_path):
    client, _ = policy_client
    assert client.post("/v1/tokens", json={"tenant": "acme"}).status_code == 401
    assert client.post("/v1/tokens", json={"tenant": "acme"}, headers=ADMIN).status_code == 200
    [login] = trails(tmp_path, "auth.login_min")
    assert login["actor"] == "acme" and login["data"] == {"method": "token", "ok": True}


# core


def test_core_rate_limits_each_tenant_and_bucket_with_the_time_until_a_token(catalog, tmp_path):
    clock = Clock()
    with TestClient(core.create_app(catalog, tmp_path, admin_token=ADMIN["x-admin-token"], clock=clock)) as client:
        acme = {"x-tenant": "acme"}
        for _ in range(120):  # write: 60 tokens/s, burst 120
            assert client.post("/v1/items", json={"kind": "doc", "size": 1}, headers=acme).status_code == 201
        limited = client.post("/v1/items", json={"kind": "doc", "size": 1}, headers=acme)
        assert limited.status_code == 429
        assert limited.json()["error"]["token"] == "RATE_LIMIT" and limited.json()["error"]["retry_after_ms"] == 17
        assert limited.headers["retry-after"] == "1"
        assert metric(client, "core_rate_limit_hits_total", bucket="write", tenant="acme") == 1
        assert client.get("/v1/items", headers=acme).status_code == 200  # another bucket
        assert client.post("/v1/items", json={"kind": "doc", "size": 1}, headers={"x-tenant": "globex"}).status_code == 201
        clock.now += 0.017  # the retry_after_ms it was given
        assert client.post("/v1/items", json={"kind": "doc", "size": 1}, headers=acme).status_code == 201
        assert client.get("/v1/items").status_code == 403  # no tenant
        assert metric(client, "core_db_query_seconds_count", op="insert") == 122
        assert client.post("/_reload?stage=next", headers=ADMIN).status_code == 200  # PRAGMA optimize


# gateway


def test_the_gateway_is_live_but_not_ready_while_its_peers_are_down(catalog, tmp_path):
    peers = {name: dead_url() for name in ("policy", "core", "office")}
    app = gateway.create_app(catalog, tmp_path, admin_token=ADMIN["x-admin-token"], peers=peers, jwks_refresh_s=3600)
    with TestClient(app) as client:
        wait_for(lambda: "not checked yet" not in client.get("/_health").text)
        ready = client.get("/_health")
        assert ready.status_code == 503
        assert ready.json()["checks"]["core"] == {"ok": False, "detail": "unreachable (ConnectError)"}
        assert client.get("/_health?probe=live").status_code == 200
        assert client.get("/_health?probe=maybe").status_code == 400
        # The next scheduled refresh is an hour away: a reload refreshes the JWKS now.
        before = metric(client, "gateway_jwks_refresh_total", ok="false")
        assert before >= 1
        assert client.post("/_reload?stage=next", headers=ADMIN).status_code == 200
        wait_for(lambda: metric(client, "gateway_jwks_refresh_total", ok="false") > before)


def test_a_refused_token_writes_access_denied_with_no_claimed_identity(catalog, tmp_path):
    app = gateway.create_app(catalog, tmp_path, peers={name: dead_url() for name in ("policy", "core", "office")})
    with TestClient(app) as client:
        assert client.get("/v1/items", headers={"x-tenant": "acme"}).status_code == 401
        assert client.post("/v1/tools/search_docs", json={}, headers={"authorization": "Bearer x.y.z"}).status_code == 401
    denied = trails(tmp_path, "access.denied_min")
    assert [(d["actor"], d["data"]) for d in denied] == [
        ("unknown", {"reason": "no_token", "route": "/v1/items"}),
        ("unknown", {"reason": "bad_token", "route": "/v1/tools/{tool}"}),
    ]


@pytest.mark.parametrize("status, body, token, retry", [
    (400, {"error": {"token": "INVALID_ARGUMENT", "correlation_id": "c"}}, "INVALID_ARGUMENT", None),
    (404, {"error": {"token": "NOT_FOUND", "correlation_id": "c"}}, "NOT_FOUND", None),
    (429, {"error": {"token": "RATE_LIMIT", "correlation_id": "c", "retry_after_ms": 17}}, "RATE_LIMIT", 17),
    (503, {"error": {"token": "BACKPRESSURE", "correlation_id": "c", "retry_after_ms": 250}}, "BACKPRESSURE", 250),
    (500, {"error": {"token": "INTERNAL", "correlation_id": "c"}}, "INTERNAL", None),
    (422, {"detail": [{"msg": "field required"}]}, "INVALID_ARGUMENT", None),
    (405, None, "METHOD_NOT_ALLOWED", None),
    (429, None, "INVALID_ARGUMENT", None),
    (500, None, "UPSTREAM_UNAVAILABLE", None),
    (502, {"error": {"token": "NOT_A_TOKEN"}}, "UPSTREAM_UNAVAILABLE", None),
])
def test_a_peers_error_is_relayed_and_only_its_failures_become_upstream_unavailable(catalog, status, body, token, retry):
    content = json.dumps(body).encode() if body is not None else b"<html>"
    error = downstream_error(status, content, ErrorTokens(catalog))
    assert (error.token, error.retry_after_ms) == (token, retry)
    assert downstream_error(201, b"{}", ErrorTokens(catalog)) is None


# office


class SteppingClock(Clock):
    """Moves `step` seconds each time it is read, once `step` is set."""

    step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_reconnect_time_is_the_services_share_from_handshake_to_replay_not_the_time_away(catalog, tmp_path):
    clock = SteppingClock()
    with TestClient(office.create_app(catalog, tmp_path, peers={"policy": dead_url()}, clock=clock)) as client:
        with client.websocket_connect("/v1/sessions/s1/events") as ws:  # a first connection is not a reconnect
            assert ws.receive_json() == {"type": "ready", "replayed": 0}
        assert metric(client, "office_ws_reconnect_duration_seconds_count") == 0
        clock.now += 30  # the client stays away: its own time, not the service's
        clock.step = 0.01  # each read of the clock: the service working
        with client.websocket_connect("/v1/sessions/s1/events?last_event_id=0") as ws:
            assert ws.receive_json() == {"type": "ready", "replayed": 0}
        clock.step = 0.0
        with client.websocket_connect("/v1/sessions/s2/events?last_event_id=0") as ws:  # no earlier socket
            ws.receive_json()
        assert metric(client, "office_ws_reconnect_duration_seconds_count") == 2
        # Handshake to replay sent: the two reads between arrival and the replay, nothing of the 30 s away.
        assert 0 < metric(client, "office_ws_reconnect_duration_seconds_sum") < 0.1


def test_idle_sessions_are_evicted_and_listened_ones_kept(catalog, tmp_path):
    clock = Clock()
    with TestClient(office.create_app(catalog, tmp_path, admin_token=ADMIN["x-admin-token"],
                                      peers={"policy": dead_url()}, clock=clock)) as client:
        for session in ("a", "b"):
            with client.websocket_connect(f"/v1/sessions/{session}/events") as ws:
                ws.receive_json()
        with client.websocket_connect("/v1/sessions/live/events") as ws:
            ws.receive_json()
            clock.now += office.SESSION_IDLE_S + 1
            assert client.post("/_reload?stage=next", headers=ADMIN).status_code == 200
            assert client.get("/_health").json()["checks"]["sessions"]["detail"] == "1 sessions"


def test_past_the_bound_the_least_recently_used_idle_session_goes(monkeypatch):
    monkeypatch.setattr(office, "MAX_SESSIONS", 2)
    sessions = office.Sessions(Clock())
    sessions.get("a").listeners.add(object())
    sessions.get("b")
    sessions.get("c")
    assert list(sessions.by_id) == ["a", "c"]
