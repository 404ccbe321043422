"""Alertmanager: routes by severity, grouping, inhibition, receivers, and routing test cases.

Pages go to the webhook sink and, outside the local profile, to e-mail; tickets to the webhook;
Watchdog to its own receiver with a short repeat so its silence is noticed. A page inhibits the
ticket of the same SLO; ComponentDown inhibits every other alert of its component.
"""

from __future__ import annotations

from vigia import conventions as names
from vigia.model import Catalog

SMTP_PASSWORD_FILE = "/etc/alertmanager/secrets/smtp_password"


def render(catalog: Catalog, profile: str) -> dict[str, object]:
    return {names.ALERTMANAGER_CONFIG: config(catalog, profile),
            names.ALERTMANAGER_ROUTE_TESTS: route_tests(catalog)}


def webhook_url(catalog: Catalog, profile: str) -> str:
    prof = catalog.profiles[profile]
    host = "127.0.0.1" if prof.host == "127.0.0.1" else "alert-sink"
    return f"http://{host}:{prof.webhook_sink_port}/alerts"


def config(catalog: Catalog, profile: str) -> dict:
    a = catalog.alerting
    email = profile != "local"
    webhook = {"url": webhook_url(catalog, profile), "send_resolved": True}
    page = {"name": "page", "webhook_configs": [webhook]}
    out: dict = {}
    if email:
        out["global"] = {
            "smtp_smarthost": a.smtp_smarthost,
            "smtp_from": a.smtp_from,
            "smtp_auth_username": a.smtp_username,
            "smtp_auth_password_file": SMTP_PASSWORD_FILE,
            "smtp_require_tls": True,
        }
        page["email_configs"] = [{"to": a.page_email_to, "send_resolved": True}]
    out["route"] = {
        "receiver": "ticket",
        "group_by": ["alertname", "slo", "component"],
        "group_wait": a.group_wait,
        "group_interval": a.group_interval,
        "repeat_interval": a.repeat_interval,
        "routes": [
            {"receiver": "watchdog", "matchers": ['alertname="Watchdog"'],
             "group_wait": "0s", "group_interval": a.watchdog_repeat_interval,
             "repeat_interval": a.watchdog_repeat_interval},
            {"receiver": "page", "matchers": ['severity="page"']},
            {"receiver": "ticket", "matchers": ['severity="ticket"']},
        ],
    }
    out["inhibit_rules"] = [
        {"source_matchers": ['severity="page"', f'alertname="{names.SLO_BURN_ALERT}"'],
         "target_matchers": ['severity="ticket"', f'alertname="{names.SLO_BURN_ALERT}"'],
         "equal": ["slo"]},
        {"source_matchers": ['alertname="ComponentDown"'],
         "target_matchers": ['alertname!~"ComponentDown|Watchdog"'],
         "equal": ["component"]},
    ]
    out["receivers"] = [
        page,
        {"name": "ticket", "webhook_configs": [webhook]},
        {"name": "watchdog", "webhook_configs": [dict(webhook, send_resolved=False)]},
    ]
    return out


def route_tests(catalog: Catalog) -> list[dict]:
    """Cases for `amtool config routes test`: labels in, receivers expected."""
    cases = [
        {"name": "watchdog-goes-to-its-own-receiver",
         "labels": {"alertname": "Watchdog", "severity": "none", "component": "vigia"}, "receivers": ["watchdog"]},
        {"name": "slo-page-pages", "labels": {"alertname": names.SLO_BURN_ALERT, "severity": "page",
                                               "slo": catalog.slos[0].name}, "receivers": ["page"]},
        {"name": "slo-ticket-files-a-ticket", "labels": {"alertname": names.SLO_BURN_ALERT, "severity": "ticket",
                                                         "slo": catalog.slos[0].name}, "receivers": ["ticket"]},
        {"name": "unlabelled-alert-falls-back-to-ticket", "labels": {"alertname": "Unknown"}, "receivers": ["ticket"]},
    ]
    for alert in catalog.alerts:
        if alert.kind == "watchdog":
            continue
        receiver = "page" if alert.severity == "page" else "ticket"
        cases.append({"name": f"{alert.name}-routes-to-{receiver}",
                      "labels": {"alertname": alert.name, "severity": alert.severity,
                                 "component": alert.component or "gateway"},
                      "receivers": [receiver]})
    return cases
