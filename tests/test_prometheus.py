"""Prometheus artifacts: every alert has a runbook and a firing and a quiet promtool case;
expressions name only catalog metrics and recording rules; sharding only where asked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import prometheus
from vigia import conventions as names
from vigia.writer import write_tree

ROOT = Path(__file__).resolve().parent.parent
PROMQL_WORDS = {
    "sum", "rate", "increase", "histogram_quantile", "avg_over_time", "topk", "label_replace", "absent",
    "vector", "max", "by", "and", "or", "on", "unless", "without", "group_left", "up", "bool",
}


def referenced_names(expr: str) -> set[str]:
    """Metric-like identifiers in an expression (quoted strings, label matchers and ranges removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"(by|without|on)\s*\([^)]*\)", "", expr)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {t for t in tokens if t not in PROMQL_WORDS and not re.fullmatch(r"[0-9e.]+", t)}


def known_series(catalog, rendered) -> set[str]:
    known = {"up"}
    for m in catalog.metrics:
        known.add(m.name)
        if m.type == "histogram":
            known |= {f"{m.name}_bucket", f"{m.name}_count", f"{m.name}_sum"}
    for group in rendered[names.RECORDING_RULES]["groups"]:
        known |= {r["record"] for r in group["rules"]}
    return known


@pytest.fixture(scope="module")
def rendered(catalog):
    return prometheus.render(catalog, "prod")


def alert_rules(rendered):
    return [r for g in rendered[names.ALERT_RULES]["groups"] for r in g["rules"]]


def test_every_alert_has_a_runbook_that_exists_in_the_repo(rendered, catalog):
    for rule in alert_rules(rendered):
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(catalog.runbook_base_url)
        path = ROOT / "docs" / "runbooks" / url.rsplit("/", 1)[1]
        assert path.is_file(), f"{rule['alert']}: {path} missing"
        text = path.read_text()
        for section in ("## Symptoms", "## Diagnosis", "## Resolution", "## Escalation"):
            assert section in text, f"{path.name} lacks {section}"


def test_every_alert_has_summary_description_severity_and_component(rendered):
    for rule in alert_rules(rendered):
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["labels"]["severity"] in ("page", "ticket", "none")
        assert "component" in rule["labels"] or "label_replace" in rule["expr"]


def test_every_catalog_alert_and_slo_tier_is_rendered(rendered, catalog):
    alerts = alert_rules(rendered)
    assert {a.name for a in catalog.alerts} <= {r["alert"] for r in alerts}
    burn = [r for r in alerts if r["alert"] == names.SLO_BURN_ALERT]
    assert len(burn) == len(catalog.slos) * len(catalog.burn_rate_tiers)
    assert {r["labels"]["burn_tier"] for r in burn} == {"14.4x", "6x", "3x", "1x"}
    assert all(f"> {catalog.low_traffic_min_rate:g}" in r["expr"] for r in burn), "low-traffic guard missing"


def test_expressions_name_only_catalog_metrics_and_recording_rules(rendered, catalog):
    known = known_series(catalog, rendered)
    for group in rendered[names.RECORDING_RULES]["groups"] + rendered[names.ALERT_RULES]["groups"]:
        for rule in group["rules"]:
            unknown = referenced_names(rule["expr"]) - known
            assert not unknown, f"{rule.get('record') or rule.get('alert')}: {unknown}"


def test_every_alert_has_a_firing_and_a_quiet_rule_test(rendered, catalog):
    cases: dict[str, dict[str, int]] = {}
    for path in (names.RULE_TESTS, names.RULE_TESTS_SLOW):
        for test in rendered[path]["tests"]:
            for check in test["alert_rule_test"]:
                entry = cases.setdefault(check["alertname"], {"fires": 0, "quiet": 0})
                entry["fires" if check["exp_alerts"] else "quiet"] += 1
    for name in {r["alert"] for r in alert_rules(rendered)}:
        assert cases.get(name, {}).get("fires", 0) >= 1, f"{name} has no firing case"
        if name != "Watchdog":  # Watchdog always fires by design
            assert cases[name]["quiet"] >= 1, f"{name} has no quiet case"
    fired_tiers = {a["exp_labels"]["burn_tier"] for path in (names.RULE_TESTS, names.RULE_TESTS_SLOW)
                   for t in rendered[path]["tests"] for c in t["alert_rule_test"] for a in c["exp_alerts"]
                   if c["alertname"] == names.SLO_BURN_ALERT}
    assert fired_tiers == {f"{t.factor:g}x" for t in catalog.burn_rate_tiers}


@pytest.mark.parametrize("profile,shards,remote", [
    pytest.param("local", 1, False, id="local scrapes 127.0.0.1 without sharding or remote_write"),
    pytest.param("prod", 1, False, id="prod scrapes compose services without sharding"),
    pytest.param("cluster", 2, True, id="cluster shards scraping by hashmod and remote-writes"),
])
def test_profiles_shape_the_scrape_config(catalog, profile, shards, remote):
    files = prometheus.render(catalog, profile)
    configs = [files[names.PROMETHEUS_CONFIG]] + [files[names.prometheus_shard_config(i)] for i in range(1, shards)]
    assert len([p for p in files if p.startswith("prometheus/prometheus")]) == shards
    for index, config in enumerate(configs):
        assert ("remote_write" in config) == remote
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        assert set(jobs) == {"prometheus", "alertmanager"} | {c.name for c in catalog.components}
        gateway = jobs["gateway"]
        assert gateway["metrics_path"] == "/_metrics"
        target = gateway["static_configs"][0]["targets"][0]
        assert target == ("127.0.0.1:8081" if profile == "local" else "gateway:8081")
        keep = [r for r in gateway.get("relabel_configs", []) if r["action"] == "keep"]
        assert [r["regex"] for r in keep] == ([str(index)] if shards > 1 else [])


def test_a_broken_expectation_makes_promtool_test_rules_fail(tmp_path, catalog):
    """The generated tests test something: flip one expected label and promtool must object."""
    files = prometheus.render(catalog, "local")
    tests = files[names.RULE_TESTS]
    fast_only = {**tests, "tests": [t for t in tests["tests"] if "Watchdog" in t["name"]]}
    fast_only["tests"][0]["alert_rule_test"][0]["exp_alerts"][0]["exp_labels"]["severity"] = "page"
    files[names.RULE_TESTS] = fast_only
    write_tree(tmp_path, files)
    proc = subprocess.run(["promtool", "test", "rules", str(tmp_path / names.RULE_TESTS)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Watchdog" in proc.stdout + proc.stderr
    yaml.safe_load((tmp_path / names.RULE_TESTS).read_text().split("\n", 1)[1])
