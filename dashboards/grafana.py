"""Grafana provisioning (datasources, dashboard provider) and the dashboards as grafanalib JSON."""

from __future__ import annotations

import json

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from dashboards.panels import CLICKHOUSE, Dashboard, Panel, dashboards, panel_queries  # noqa: F401 (re-export)
from vigia import conventions as names
from vigia.model import Catalog

DATASOURCES = {
    "prometheus": {"type": "prometheus", "uid": "vigia-prometheus"},
    "clickhouse": {"type": "grafana-clickhouse-datasource", "uid": "vigia-clickhouse"},
}
WIDTH, HEIGHT = 12, 8


def render(catalog: Catalog, profile: str) -> dict[str, object]:
    files: dict[str, object] = {
        names.GRAFANA_DATASOURCES: datasources(catalog, profile),
        names.GRAFANA_DASHBOARD_PROVIDER: provider(),
    }
    for dash in dashboards(catalog):
        files[f"{names.GRAFANA_DASHBOARDS_DIR}/{dash.stem}.json"] = build(dash)
    return files


def datasources(catalog: Catalog, profile: str) -> dict:
    prof = catalog.profiles[profile]
    local = prof.host == "127.0.0.1"
    prom_url = prof.query_url or f"http://{'127.0.0.1' if local else 'prometheus'}:{prof.prometheus_port}"
    return {"apiVersion": 1, "datasources": [
        {"name": "Prometheus", "uid": DATASOURCES["prometheus"]["uid"], "type": "prometheus", "access": "proxy",
         "url": prom_url, "isDefault": True,
         "jsonData": {"timeInterval": catalog.profiles[profile].scrape_interval}},
        {"name": "ClickHouse", "uid": DATASOURCES["clickhouse"]["uid"], "type": "grafana-clickhouse-datasource",
         "jsonData": {"host": "127.0.0.1" if local else "clickhouse", "port": 8123, "protocol": "http",
                      "defaultDatabase": catalog.storage.clickhouse_database, "username": "grafana_ro"},
         "secureJsonData": {"password": "$CLICKHOUSE_GRAFANA_PASSWORD"}},
    ]}


def provider() -> dict:
    return {"apiVersion": 1, "providers": [{
        "name": "vigia", "folder": "vigia", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "options": {"path": "/var/lib/grafana/dashboards"}}]}


def _target(panel: Panel, index: int) -> object:
    query = panel.queries[index]
    ref = chr(ord("A") + index)
    if panel.datasource == CLICKHOUSE:
        return {"refId": ref, "datasource": DATASOURCES["clickhouse"], "editorType": "sql", "queryType": "table",
                "format": 1, "rawSql": query.expr}
    return g.Target(expr=query.expr, legendFormat=query.legend, refId=ref, datasource=DATASOURCES["prometheus"])


def _panel(panel: Panel, panel_id: int, pos: g.GridPos) -> object:
    targets = [_target(panel, i) for i in range(len(panel.queries))]
    common = dict(title=panel.title, id=panel_id, gridPos=pos, targets=targets, description=panel.description or None,
                  dataSource=DATASOURCES[panel.datasource])
    steps = [g.Threshold("green", 0, 0.0)] + [g.Threshold("red", i + 1, t) for i, t in enumerate(panel.thresholds)]
    if panel.kind == "stat":
        return g.Stat(format=panel.unit or "none", thresholds=steps, **common)
    if panel.kind == "table":
        return g.Table(**common)
    return g.TimeSeries(unit=panel.unit, thresholds=steps,
                        thresholdsStyleMode="line" if panel.thresholds else "off", **common)


def build(dash: Dashboard) -> dict:
    panels = []
    for i, panel in enumerate(dash.panels):
        pos = g.GridPos(h=HEIGHT, w=WIDTH, x=(i % 2) * WIDTH, y=(i // 2) * HEIGHT)
        panels.append(_panel(panel, i + 1, pos))
    dashboard = g.Dashboard(title=f"vigia / {dash.title}", uid=dash.uid, panels=panels, tags=["vigia"],
                            timezone="utc", refresh="30s", time=g.Time("now-3h", "now"))
    return json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder, sort_keys=True))
