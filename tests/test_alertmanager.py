"""Alertmanager: the real binary delivers pages to the webhook, inhibits an SLO alert behind
ComponentDown, and the rendered config never holds the SMTP password."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from infra import alertmanager
from tests.helpers import free_port, wait_http, with_local_ports
from vigia import conventions as names
from vigia.writer import write_tree


class Sink:
    """An in-test Alertmanager webhook receiver that records every notification."""

    def __init__(self):
        self.notifications: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alertnames(self) -> set[str]:
        return {a["labels"]["alertname"] for n in self.notifications for a in n["alerts"]}


@pytest.fixture()
def running(tmp_path, catalog):
    sink = Sink()
    port = free_port()
    model = with_local_ports(catalog, webhook_sink_port=sink.port, alertmanager_port=port)
    write_tree(tmp_path, alertmanager.render(model, "local"))
    proc = subprocess.Popen(
        ["prometheus-alertmanager", f"--config.file={tmp_path / names.ALERTMANAGER_CONFIG}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        yield f"http://127.0.0.1:{port}", sink
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        sink.server.shutdown()


def post_alerts(url: str, *alerts: dict) -> None:
    now = datetime.now(timezone.utc)
    payload = [{"labels": a, "annotations": {"summary": "test"}, "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(minutes=5)).isoformat()} for a in alerts]
    httpx.post(f"{url}/api/v2/alerts", json=payload, timeout=5).raise_for_status()


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_page_reaches_the_webhook_sink(running):
    url, sink = running
    post_alerts(url, {"alertname": "Gateway5xxRateHigh", "severity": "page", "component": "gateway"})
    assert wait_for(lambda: "Gateway5xxRateHigh" in sink.alertnames())
    assert sink.notifications[0]["receiver"] == "page"


def test_component_down_inhibits_the_components_slo_alert(running):
    url, sink = running
    post_alerts(url,
                {"alertname": "ComponentDown", "severity": "page", "component": "gateway", "job": "gateway"},
                {"alertname": names.SLO_BURN_ALERT, "severity": "page", "component": "gateway",
                 "slo": "gateway-availability", "burn_tier": "14.4x"},
                {"alertname": "Watchdog", "severity": "none", "component": "vigia"})
    assert wait_for(lambda: {"ComponentDown", "Watchdog"} <= sink.alertnames())
    time.sleep(2)
    assert names.SLO_BURN_ALERT not in sink.alertnames()


def test_a_page_inhibits_the_ticket_of_the_same_slo(running):
    url, sink = running
    slo = {"alertname": names.SLO_BURN_ALERT, "component": "core", "slo": "core-latency"}
    post_alerts(url, slo | {"severity": "page", "burn_tier": "14.4x"}, slo | {"severity": "ticket", "burn_tier": "3x"})
    assert wait_for(lambda: sink.notifications)
    time.sleep(2)
    tiers = {a["labels"]["burn_tier"] for n in sink.notifications for a in n["alerts"]}
    assert tiers == {"14.4x"}


@pytest.mark.parametrize("profile", ["prod", "cluster"])
def test_the_smtp_password_is_read_from_a_file_never_rendered(catalog, profile, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "s3cr3t-from-env")
    config = alertmanager.config(catalog, profile)
    assert config["global"]["smtp_auth_password_file"] == alertmanager.SMTP_PASSWORD_FILE
    assert "smtp_auth_password" not in config["global"]
    assert "s3cr3t" not in json.dumps(config)
    page = next(r for r in config["receivers"] if r["name"] == "page")
    assert page["email_configs"][0]["to"] == catalog.alerting.page_email_to


def test_the_local_profile_delivers_to_the_webhook_only(catalog):
    config = alertmanager.config(catalog, "local")
    assert "global" not in config
    assert all("email_configs" not in r for r in config["receivers"])
