"""Prometheus artifacts: every alert has a runbook and firing and boundary promtool cases;
expressions (rules, runbooks) name only catalog metrics and recording rules; sharding only where asked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import prometheus
from vigia import catalog as catalog_mod
from vigia import conventions as names
from vigia.writer import write_tree

ROOT = Path(__file__).resolve().parent.parent
PROMQL_WORDS = {
    "sum", "rate", "increase", "histogram_quantile", "avg_over_time", "topk", "label_replace", "absent",
    "vector", "max", "by", "and", "or", "on", "unless", "without", "group_left", "up", "bool", "count",
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
    for path in (names.SLO_RULES, names.RECORDING_RULES):
        known |= {r["record"] for group in rendered[path]["groups"] for r in group["rules"]}
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
    for slo in catalog.slos:
        guard = f'{names.sli_events_rate("1h")}{{slo="{slo.name}"}} > {catalog.min_rate(slo):g}'
        assert any(guard in r["expr"] for r in burn), f"{slo.name}: low-traffic guard missing"
    reconnect = next(s for s in catalog.slos if s.name == "office-ws-reconnect")
    assert catalog.min_rate(reconnect) < catalog.low_traffic_min_rate, "the reconnect SLO sets its own guard"


def test_blueprint_ratio_alerts_have_a_low_traffic_guard_per_window(rendered, catalog):
    for alert in catalog.alerts:
        if alert.kind != "error_ratio":
            continue
        expr = next(r["expr"] for r in alert_rules(rendered) if r["alert"] == alert.name)
        for cond in alert.conditions:
            assert f"[{cond.window}])) > {catalog.min_rate(alert):g}" in expr, f"{alert.name} {cond.window}: no guard"


def test_every_window_an_alert_reads_is_recorded(catalog_text):
    """Windows come from the tiers: a tier over 40m and 7m gets its own recorded ratios."""
    model = catalog_mod.loads(catalog_text.replace("{severity: page, factor: 14.4, long: 1h, short: 5m, for: 2m}",
                                                   "{severity: page, factor: 14.4, long: 40m, short: 7m, for: 2m}", 1))
    files = prometheus.render(model, "local")
    recorded = {r["record"] for g in files[names.SLO_RULES]["groups"] for r in g["rules"]}
    read = {name for r in alert_rules(files) for name in re.findall(r"slo:sli_\w+:\w+", r["expr"])}
    assert {names.sli_error_ratio("7m"), names.sli_error_ratio("40m")} <= read
    assert read <= recorded


def test_expressions_name_only_catalog_metrics_and_recording_rules(rendered, catalog):
    known = known_series(catalog, rendered)
    for group in [g for path in names.RULE_FILES for g in rendered[path]["groups"]]:
        for rule in group["rules"]:
            unknown = referenced_names(rule["expr"]) - known
            assert not unknown, f"{rule.get('record') or rule.get('alert')}: {unknown}"


def rule_test_checks(files) -> list[tuple[str, dict]]:
    """(test group name, check) for every alert_rule_test of every generated test file."""
    return [(test["name"], check) for path, data in sorted(files.items()) if path.startswith("prometheus/tests/")
            for test in data["tests"] for check in test["alert_rule_test"]]


def test_every_alert_has_firing_and_boundary_cases(rendered, catalog):
    cases: dict[str, dict[str, int]] = {}
    for _, check in rule_test_checks(rendered):
        entry = cases.setdefault(check["alertname"], {"fires": 0, "quiet": 0})
        entry["fires" if check["exp_alerts"] else "quiet"] += 1
    quiet_cases = {"latency_quantile": 3, "error_ratio": 2, "spike": 2, "threshold": 1, "target_down": 1, "absent": 1}
    for alert in catalog.alerts:
        assert cases[alert.name]["fires"] >= 1, f"{alert.name} has no firing case"
        if alert.kind == "error_ratio":
            assert cases[alert.name]["fires"] == len(alert.conditions), f"{alert.name}: one firing case per condition"
            assert cases[alert.name]["quiet"] == 2 * len(alert.conditions)
        elif alert.kind != "watchdog":  # Watchdog always fires by design
            assert cases[alert.name]["quiet"] >= quiet_cases[alert.kind], f"{alert.name}: {cases[alert.name]}"
    fired_tiers = {a["exp_labels"]["burn_tier"] for _, c in rule_test_checks(rendered) for a in c["exp_alerts"]
                   if c["alertname"] == names.SLO_BURN_ALERT}
    assert fired_tiers == {f"{t.factor:g}x" for t in catalog.burn_rate_tiers}


def test_every_burn_tier_has_the_five_boundary_cases_for_every_slo(rendered, catalog):
    for tier in catalog.burn_rate_tiers:
        title = f"SLO {tier.factor:g}x burn over {tier.long} and {tier.short} "
        groups = {name.removeprefix(title): check for name, check in rule_test_checks(rendered) if name.startswith(title)}
        assert set(groups) == {
            "fires just above the threshold", "stays quiet just below the threshold", "stays quiet under the low-traffic guard",
            f"stays quiet when only the {tier.short} window burns",
            f"stays quiet once the {tier.short} window has recovered and only the {tier.long} one burns"}
        assert {a["exp_labels"]["slo"] for a in groups["fires just above the threshold"]["exp_alerts"]} == {s.name for s in catalog.slos}


def test_latency_alerts_have_a_case_for_each_window_alone(rendered, catalog):
    names_ = [name for name, _ in rule_test_checks(rendered)]
    for alert in catalog.alerts:
        if alert.kind == "latency_quantile":
            shortest = min(alert.windows, key=lambda w: int(w[:-1]))
            assert f"{alert.name} stays quiet when only the {shortest} window is slow" in names_
            assert f"{alert.name} stays quiet once the {shortest} window has recovered" in names_


@pytest.mark.parametrize("profile,shards,remote", [
    pytest.param("local", 1, False, id="local scrapes 127.0.0.1 without sharding, remote_write or a collector"),
    pytest.param("prod", 1, False, id="prod scrapes compose services and the collector without sharding"),
    pytest.param("cluster", 2, True, id="cluster shards scraping by hashmod, remote-writes and evaluates no rule"),
])
def test_profiles_shape_the_scrape_config(catalog, profile, shards, remote):
    files = prometheus.render(catalog, profile)
    paths = sorted(p for p in files if p.startswith("prometheus/prometheus"))
    assert paths == ([names.prometheus_shard_config(i) for i in range(shards)] if shards > 1 else [names.PROMETHEUS_CONFIG])
    for index, path in enumerate(paths):
        config = files[path]
        assert ("remote_write" in config) == remote
        # A shard sees part of the series: rules and alerts belong to the remote store's ruler.
        assert ("rule_files" in config) == ("alerting" in config) == (shards == 1)
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        collector = {names.OTEL_COLLECTOR_JOB} if profile != "local" else set()
        assert set(jobs) == {"prometheus", "alertmanager"} | collector | {c.name for c in catalog.components}
        gateway = jobs["gateway"]
        assert gateway["metrics_path"] == "/_metrics"
        target = gateway["static_configs"][0]["targets"][0]
        assert target == ("127.0.0.1:8081" if profile == "local" else "gateway:8081")
        for job in jobs.values():
            keep = [r for r in job.get("relabel_configs", []) if r["action"] == "keep"]
            expected = [str(index)] if shards > 1 and job["job_name"] != "prometheus" else []
            assert [r["regex"] for r in keep] == expected, job["job_name"]


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


# Prometheus' and Alertmanager's own metrics a runbook may query.
SELF_METRICS = re.compile(r"^(prometheus|alertmanager)_\w+$|^ALERTS$")


def runbook_queries() -> list[tuple[str, str]]:
    return [(path.name, line.strip()) for path in sorted((ROOT / "docs" / "runbooks").glob("*.md"))
            for block in re.findall(r"```promql\n(.*?)```", path.read_text(), re.S)
            for line in block.splitlines() if line.strip()]


def test_every_runbook_query_is_valid_promql_on_catalog_names(tmp_path, rendered, catalog):
    queries = runbook_queries()
    assert {name for name, _ in queries} == {f"{a['alert']}.md" for a in alert_rules(rendered)}
    rules = {"groups": [{"name": "runbook-queries", "rules": [
        {"record": f"runbook:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    known = known_series(catalog, rendered)
    for name, expr in queries:
        unknown = {n for n in referenced_names(expr) - known if not SELF_METRICS.match(n)}
        assert not unknown, f"{name}: {expr}: {unknown}"
