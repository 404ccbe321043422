"""OTel Collector pipelines, Grafana dashboards and ClickHouse DDL: each checked against what
the real tool accepts (contrib component list, promtool's PromQL parser, chDB)."""

from __future__ import annotations

import json
import re
import subprocess

import clickhouse_connect
import pytest
import yaml

from dashboards import grafana
from dashboards.panels import CLICKHOUSE, PROMETHEUS, READS, dashboards, panel_queries
from infra import clickhouse, compose, otel, prometheus
from tests.test_prometheus import known_series, referenced_names
from vigia import conventions as names
from vigia.model import duration_seconds
from vigia.render import PROFILES, render_all
from vigia.writer import serialize


@pytest.mark.parametrize("profile", PROFILES)
def test_otel_pipelines_reference_only_defined_contrib_components(catalog, profile):
    config = otel.config(catalog, profile)
    for kind in ("receivers", "processors", "exporters", "extensions"):
        for name in config[kind]:
            assert name.split("/")[0] in otel.CONTRIB_COMPONENTS[kind], f"{kind}.{name} is not a known contrib component"
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline[kind]:
                assert name in config[kind], f"pipeline refers to undefined {kind}.{name}"
        assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch"
    assert set(config["service"]["extensions"]) <= set(config["extensions"])


def _statements(config: dict, signal: str, context: str) -> list[str]:
    blocks = config["processors"]["transform/server_blind"][f"{signal}_statements"]
    return [st for block in blocks if block["context"] == context for st in block["statements"]]


def test_otel_logs_keep_exactly_the_catalog_fields_and_no_body(catalog):
    config = otel.config(catalog, "prod")
    statements = _statements(config, "log", "log")
    kept = re.findall(r'"([^"]+)"', statements[0])
    assert statements[0].startswith("keep_keys(attributes,")
    assert kept == list(catalog.logs.fields)
    assert 'set(body, "")' in statements
    assert "${env:CLICKHOUSE_OTEL_PASSWORD}" in json.dumps(otel.config(catalog, "prod"))


@pytest.mark.parametrize("signal", ["log", "trace"])
def test_otel_strips_resource_and_scope_attributes(catalog, signal):
    config = otel.config(catalog, "prod")
    assert _statements(config, signal, "resource") == ['keep_keys(attributes, ["service.name", "service.instance.id"])']
    assert _statements(config, signal, "scope") == ['delete_matching_keys(attributes, ".*")']
    pipeline = config["service"]["pipelines"][f"{signal}s"]["processors"]
    # The profile label is added after the strip, so it survives it.
    assert pipeline.index("transform/server_blind") < pipeline.index("resource")


def test_otel_spans_keep_route_method_and_status_only(catalog):
    config = otel.config(catalog, "prod")
    span = _statements(config, "trace", "span")
    kept = re.findall(r'"([^"]+)"', span[0])
    assert kept == list(catalog.logs.fields) + list(otel.SPAN_KEYS)
    assert any(s.startswith("set(name, Concat(") for s in span), "span names become method + route template"
    assert any(s.startswith('set(name, "request") where') for s in span)
    assert 'set(status.message, "")' in span
    # Span events (exception.message, ...) are dropped before the transform.
    assert config["processors"]["filter/server_blind"]["traces"] == {"spanevent": ["true"]}
    assert config["service"]["pipelines"]["traces"]["processors"][1] == "filter/server_blind"


def test_otel_metrics_drop_what_prometheus_scrapes_directly(catalog):
    """The collector's Prometheus exporter carries only what came over OTLP from elsewhere."""
    config = otel.config(catalog, "prod")
    condition = config["processors"]["filter/scraped_directly"]["metrics"]["metric"][0]
    pattern = re.search(r'"\^\((.*)\)\$"', condition).group(1)
    assert set(pattern.split("|")) == {c.name for c in catalog.components}
    assert "filter/scraped_directly" in config["service"]["pipelines"]["metrics"]["processors"]
    port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    jobs = {j["job_name"]: j for j in prometheus.config(catalog, "prod")["scrape_configs"]}
    assert jobs[names.OTEL_COLLECTOR_JOB]["static_configs"][0]["targets"] == [f"otel-collector:{port}"]


@pytest.fixture(scope="module")
def dashboards_prod(catalog):
    return grafana.render(catalog, "prod")


def test_the_four_dashboards_have_stable_uids_and_unique_panel_ids(dashboards_prod):
    for stem, uid, title in names.DASHBOARDS:
        dash = dashboards_prod[f"{names.GRAFANA_DASHBOARDS_DIR}/{stem}.json"]
        assert dash["uid"] == uid and title in dash["title"]
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)) and len(ids) >= 5


def test_every_dashboard_query_is_valid_promql_on_catalog_names(tmp_path, catalog):
    queries = [q for q in panel_queries(catalog) if q[2] == PROMETHEUS]
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q[3]} for i, q in enumerate(queries)]}]}
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    known = known_series(catalog, prometheus.render(catalog, "prod"))
    for uid, title, _, expr in queries:
        assert not referenced_names(expr) - known, f"{uid} / {title}: {referenced_names(expr) - known}"


def _base_metric(name: str, catalog) -> str:
    """The catalog metric behind a series or recording-rule name."""
    for m in catalog.metrics:
        if name in (m.name, f"{m.name}_bucket", names.request_rate_rule(m.name)) or name.startswith(f"{m.name}:"):
            return m.name
    return name


def test_the_dashboards_read_only_metrics_the_catalog_cross_checks(catalog):
    """Every catalog metric a panel names is an HTTP or SLO metric (derived from the catalog) or
    listed in READS with every label the panel filters or groups by."""
    derived = {m.name for m in catalog.metrics if m.http} | {s.metric for s in catalog.slos}
    reads = {(dashboard, name): labels for dashboard, name, _, labels in READS}
    titles = {uid: title for _, uid, title in names.DASHBOARDS}
    for uid, title, kind, expr in panel_queries(catalog):
        if kind != PROMETHEUS:
            continue
        for name in referenced_names(expr):
            base = _base_metric(name, catalog)
            if base in derived or base.startswith("slo:"):
                continue
            labels = reads.get((titles[uid], base))
            assert labels is not None, f"{titles[uid]} / {title} reads {base}, which READS does not list"
            used = set(re.findall(r"(\w+)\s*[=!]~?\s*\"", expr)) | {
                label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
            assert used - {"route", "code"} <= set(labels), f"{title}: {used - set(labels)}"


def test_executive_panels_use_recording_rules_on_internal_routes(catalog):
    panels = {p.title: p for d in dashboards(catalog) for p in d.panels}
    latency = panels["Latency p50/p95/p99 by domain"]
    assert all(":internal_p" in q.expr and "histogram_quantile" not in q.expr for q in latency.queries)
    errors = panels["Error % by domain (5xx)"]
    assert all(q.expr.count(names.INTERNAL_ROUTES) == 2 and ":rate5m" in q.expr for q in errors.queries)
    assert "Policy decisions" in panels


def test_the_budget_panel_is_traffic_weighted_over_a_recorded_window_within_retention(catalog):
    slowest = catalog.burn_rate_tiers[-1]
    panel = next(p for d in dashboards(catalog) for p in d.panels if p.title.startswith("Error budget remaining"))
    assert panel.title == f"Error budget remaining ({slowest.long} window)"
    assert all(names.sli_error_ratio(slowest.long) in q.expr and "_over_time" not in q.expr for q in panel.queries)
    assert duration_seconds(slowest.long) <= catalog.retention.metrics_days * 86400


def test_clickhouse_panels_read_only_catalog_log_fields(catalog):
    allowed = set(catalog.logs.fields) | {"time", "requests", "cost_calls"}
    for uid, title, kind, sql in panel_queries(catalog):
        if kind != CLICKHOUSE:
            continue
        select = sql.split("FROM")[0].removeprefix("SELECT")
        columns = {c.strip().split(" AS ")[-1] for c in select.split(",")}
        used = set(re.findall(r"\b([a-z_]+)\b", " ".join(columns))) - {"count", "sum", "__timeinterval"}
        assert used <= allowed | {"__timeInterval"}, f"{title}: {used - allowed}"


def test_datasources_carry_no_literal_password(dashboards_prod):
    text = yaml.safe_dump(dashboards_prod[names.GRAFANA_DATASOURCES])
    assert "$CLICKHOUSE_GRAFANA_PASSWORD" in text
    assert re.findall(r"password: (\S+)", text) == ["$CLICKHOUSE_GRAFANA_PASSWORD"]


def test_the_ddl_runs_in_chdb_and_accepts_a_log_line(tmp_path, catalog):
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    for statement in clickhouse.statements(catalog, "prod"):
        client.command(statement)
    db = catalog.storage.clickhouse_database
    tables = {row[0] for row in client.query(f"SHOW TABLES FROM {db}").result_rows}
    assert tables == {names.LOGS_TABLE, names.TRAILS_TABLE, names.QUARANTINE_TABLE, names.LEDGER_TABLE,
                      names.GOLD_HOURLY_TABLE, names.GOLD_TRAILS_HOURLY_TABLE}
    line = {"ts": "2026-11-22T13:45:01.123Z", "component": "gateway", "route": "/v1/items", "ok": True,
            "code": 200, "latency_ms": 12}
    client.raw_insert(f"{db}.{names.LOGS_TABLE}", insert_block=json.dumps(line).encode(), fmt="JSONEachRow")
    row = client.query(f"SELECT component, route, code, latency_ms, tenant, toYYYYMMDD(ts) FROM {db}.{names.LOGS_TABLE}").result_rows
    assert row == [("gateway", "/v1/items", 200, 12, "", 20261122)]
    partitions = client.query(f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'logs'").result_rows
    assert "TTL" in partitions[0][0] and f"{catalog.retention.logs_days}" in partitions[0][0]


def test_the_cluster_ddl_is_replicated_and_distributed_on_cluster(tmp_path, catalog):
    statements = clickhouse.statements(catalog, "cluster")
    cluster = catalog.profiles["cluster"].clickhouse_cluster
    assert all(f"ON CLUSTER {cluster}" in s for s in statements)
    local = [s for s in statements if "_local ON CLUSTER" in s and "ENGINE = Replicated" in s]
    distributed = [s for s in statements if "Distributed(" in s]
    assert len(local) == len(distributed) == len(clickhouse.tables(catalog))
    ledger = next(s for s in local if "ingest_ledger_local" in s)
    assert "ReplicatedReplacingMergeTree(" in ledger and "loaded_at)" in ledger  # entries still collapse on a cluster
    assert not any("rand()" in s for s in distributed)  # rows that must meet share a shard
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    for statement in statements:  # the server's own parser accepts every statement
        assert client.query("SELECT formatQuery(%(q)s)", parameters={"q": statement}).result_rows


def test_users_xml_reads_passwords_from_the_environment(catalog):
    xml = clickhouse.users_xml(catalog)
    assert '<password from_env="CLICKHOUSE_GRAFANA_PASSWORD"/>' in xml
    assert "<readonly>2</readonly>" in xml
    assert not re.search(r"<password>[^<]+</password>", xml)


def test_compose_pins_every_image_and_holds_no_secret(catalog):
    rendered = compose.compose(catalog, "prod", root=".")
    for name, service in rendered["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    text = json.dumps(rendered)
    for var, _, _ in compose.ENV_VARS:
        if "PASSWORD" in var or "TOKEN" in var:
            assert f"${{{var}:?" in text
    assert "generate-me" not in text


def test_a_sharded_profile_gets_no_single_host_compose_file(catalog):
    assert names.COMPOSE_FILE in compose.render(catalog, "prod")
    assert compose.render(catalog, "cluster") == {}


@pytest.mark.parametrize("profile", PROFILES)
def test_rendered_yaml_has_no_anchors(catalog, profile):
    for path, data in render_all(catalog, profile).items():
        if path.endswith((".yml", ".yaml")):
            text = serialize(path, data).decode()
            assert not re.search(r"[&*]id\d+", text), path
