"""What each dashboard shows, as plain data: panels with their queries, built from the catalog.

Kept apart from grafanalib so the prover can run every query against live Prometheus and the
report can draw the same queries the dashboards use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vigia import conventions as names
from vigia.model import Catalog

PROMETHEUS, CLICKHOUSE = "prometheus", "clickhouse"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = ""
    kind: str = "timeseries"  # timeseries | stat | table
    datasource: str = PROMETHEUS
    thresholds: tuple[float, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Dashboard:
    stem: str
    uid: str
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


# The catalog metrics the dashboards name directly, beyond each component's HTTP metrics and the
# SLOs': (dashboard, metric, type, {label: the value a panel filters on, or None when it groups by
# it}). The catalog's cross-check refuses a catalog that lacks one (file:line, exit 2).
READS: tuple[tuple[str, str, str, dict[str, str | None]], ...] = (
    ("Executive", "gateway_backpressure_total", "counter", {}),
    ("Executive", "policy_eval_total", "counter", {"decision": "backpressure"}),
    ("Executive", "core_rate_limit_hits_total", "counter", {"tenant": None}),
    ("Office / MCP", "office_mcp_call_total", "counter", {"tool": None, "ok": "false", "err": None}),
    ("Office / MCP", "office_mcp_call_duration_seconds", "histogram", {"tool": None}),
    ("Office / MCP", "office_ws_reconnect_duration_seconds", "histogram", {}),
    ("Office / MCP", "office_ws_replayed_events_total", "counter", {}),
    ("Gateway", "gateway_jwks_refresh_total", "counter", {"ok": None}),
    ("Gateway", "gateway_jwks_refresh_consecutive_failures", "gauge", {}),
    ("Gateway", "webhook_delivery_total", "counter", {"dest": None, "ok": None}),
    ("Gateway", "webhook_delivery_duration_seconds", "histogram", {"dest": None}),
    ("Gateway", "media_presign_total", "counter", {"ok": None}),
    ("Gateway", "gateway_backpressure_total", "counter", {"session_type": None}),
    ("Core API", "core_db_query_seconds", "histogram", {"op": None}),
    ("Core API", "core_rate_limit_hits_total", "counter", {"bucket": None}),
)


def _rate(metric: str) -> str:
    return names.request_rate_rule(metric)


def _q(metric: str, q: float) -> str:
    return names.latency_quantile_rule(metric, q)


def _domain_latency(catalog: Catalog) -> Panel:
    """Per component, over its internal routes (the SLO's scope), from the recording rules."""
    queries = []
    for c in catalog.components:
        metric = catalog.http_metric(c.name, "duration").name
        for q in names.LATENCY_QUANTILES:
            queries.append(Query(names.internal_latency_quantile_rule(metric, q), f"{c.name} p{q * 100:g}"))
    return Panel("Latency p50/p95/p99 by domain", tuple(queries), unit="s", thresholds=(0.3,))


def _domain_errors(catalog: Catalog) -> Panel:
    queries = []
    for c in catalog.components:
        rule = _rate(catalog.http_metric(c.name, "requests").name)
        # `or vector(0)`: a domain without a single 5xx shows 0 %, not "No data".
        queries.append(Query(f'(sum({rule}{{code=~"5..", {names.INTERNAL_ROUTES}}}) or vector(0)) '
                             f'/ sum({rule}{{{names.INTERNAL_ROUTES}}})', c.name))
    return Panel("Error % by domain (5xx)", tuple(queries), unit="percentunit", thresholds=(0.003,),
                 description="5xx answers over all answers on internal routes (debug endpoints excluded).")


def _slo_panels(catalog: Catalog) -> tuple[Panel, ...]:
    """Burn rate over the fastest tier's long window; budget left over the slowest tier's, both
    from the recorded SLI ratios (a ratio of rates over the window: traffic-weighted)."""
    fastest, slowest = catalog.burn_rate_tiers[0], catalog.burn_rate_tiers[-1]
    burn = tuple(Query(f'{names.sli_error_ratio(fastest.long)}{{slo="{s.name}"}} / {s.error_budget:g}', s.name)
                 for s in catalog.slos)
    budget = tuple(Query(f'1 - {names.sli_error_ratio(slowest.long)}{{slo="{s.name}"}} / {s.error_budget:g}', s.name)
                   for s in catalog.slos)
    return (
        Panel(f"SLO burn rate ({fastest.long} window, 1 = on budget)", burn, thresholds=(1.0, fastest.factor),
              description=f"Bad-event ratio over {fastest.long} divided by the SLO's error budget. "
                          f"{fastest.factor:g} over {fastest.long} and {fastest.short} pages."),
        Panel(f"Error budget remaining ({slowest.long} window)", budget, unit="percentunit", kind="stat",
              description=f"1 - bad events / all events over the last {slowest.long}, divided by the error budget "
                          f"(below 0: the SLO was missed over the window)."),
    )


def _latency_by_route(catalog: Catalog, component: str, q: float) -> Query:
    metric = catalog.http_metric(component, "duration").name
    return Query(f"{_q(metric, q)}{{{names.INTERNAL_ROUTES}}}", "{{route}}")


def _requests_by_route_and_code(catalog: Catalog, component: str) -> Panel:
    rule = _rate(catalog.http_metric(component, "requests").name)
    return Panel("Requests by route and code", (Query(f"sum by (route, code) ({rule})", "{{route}} {{code}}"),), unit="reqps")


def dashboards(catalog: Catalog) -> tuple[Dashboard, ...]:
    db = catalog.storage.clickhouse_database
    logs = f"{db}.{names.LOGS_TABLE}"
    by_stem = {stem: (uid, title) for stem, uid, title in names.DASHBOARDS}
    executive = (
        _domain_latency(catalog),
        _domain_errors(catalog),
        Panel("BACKPRESSURE, last 24h", (
            Query("sum(increase(gateway_backpressure_total[24h]))", "gateway answers"),
            Query('sum(increase(policy_eval_total{decision="backpressure"}[24h]))', "policy decisions"),
        ), kind="stat"),
        Panel("Policy decisions", (Query(f"sum by (decision) ({_rate('policy_eval_total')})", "{{decision}}"),), unit="reqps"),
        Panel("Top tenants by consumption (sampled logs)", (Query(
            f"SELECT tenant, count() AS requests, sum(cost_calls) AS cost_calls FROM {logs} "
            f"WHERE $__timeFilter(ts) GROUP BY tenant ORDER BY requests DESC LIMIT 10"),),
            kind="table", datasource=CLICKHOUSE,
            description="From the server-blind logs in ClickHouse; success lines are sampled."),
        Panel("Rate-limit hits by tenant", (Query(f"topk(10, sum by (tenant) ({_rate('core_rate_limit_hits_total')}))", "{{tenant}}"),),
              unit="reqps"),
    ) + _slo_panels(catalog)
    office = (
        Panel("Tool calls by tool", (Query(f"sum by (tool, ok) ({_rate('office_mcp_call_total')})", "{{tool}} ok={{ok}}"),), unit="reqps"),
        Panel("Tool call p99 by tool", (Query(_q("office_mcp_call_duration_seconds", 0.99), "{{tool}}"),), unit="s", thresholds=(0.3,)),
        Panel("WebSocket reconnect p95", (Query(_q("office_ws_reconnect_duration_seconds", 0.95), "p95"),), unit="s", thresholds=(0.5,)),
        Panel("ErrorToken breakdown", (Query(f'sum by (err) ({_rate("office_mcp_call_total")}{{ok="false"}})', "{{err}}"),), unit="reqps"),
        Panel("Events replayed to reconnecting clients", (Query(f"sum({_rate('office_ws_replayed_events_total')})", "events/s"),)),
    )
    gateway = (
        Panel("Latency p99 by internal route", (_latency_by_route(catalog, "gateway", 0.99),), unit="s", thresholds=(0.3,)),
        Panel("Latency p95 by internal route", (_latency_by_route(catalog, "gateway", 0.95),), unit="s", thresholds=(0.3,)),
        _requests_by_route_and_code(catalog, "gateway"),
        Panel("Access / JWKS refreshes", (Query(f"sum by (ok) ({_rate('gateway_jwks_refresh_total')})", "ok={{ok}}"),
                                          Query("max(gateway_jwks_refresh_consecutive_failures)", "consecutive failures"))),
        Panel("Webhook deliveries ok/fail", (Query(f"sum by (dest, ok) ({_rate('webhook_delivery_total')})", "{{dest}} ok={{ok}}"),),
              unit="reqps"),
        Panel("Webhook delivery p95", (Query(_q("webhook_delivery_duration_seconds", 0.95), "{{dest}}"),), unit="s"),
        Panel("Media presign", (Query(f"sum by (ok) ({_rate('media_presign_total')})", "ok={{ok}}"),), unit="reqps"),
        Panel("Backpressure answers by session type", (Query(f"sum by (session_type) ({_rate('gateway_backpressure_total')})",
                                                             "{{session_type}}"),), unit="reqps"),
    )
    core = (
        Panel("DB timings p95 by operation", (Query(_q("core_db_query_seconds", 0.95), "{{op}}"),), unit="s"),
        Panel("DB timings p99 by operation", (Query(_q("core_db_query_seconds", 0.99), "{{op}}"),), unit="s"),
        Panel("Rate limits by bucket", (Query(f"sum by (bucket) ({_rate('core_rate_limit_hits_total')})", "{{bucket}}"),), unit="reqps"),
        Panel("Latency p99 by route", (_latency_by_route(catalog, "core", 0.99),), unit="s", thresholds=(0.3,)),
        _requests_by_route_and_code(catalog, "core"),
        Panel("Throughput by tenant (sampled logs)", (Query(
            f"SELECT $__timeInterval(ts) AS time, tenant, count() AS requests FROM {logs} "
            f"WHERE $__timeFilter(ts) AND component = 'core' GROUP BY time, tenant ORDER BY time"),),
            datasource=CLICKHOUSE),
    )
    content = {"00-executive": executive, "10-office-mcp": office, "20-gateway": gateway, "30-core-api": core}
    return tuple(Dashboard(stem, *by_stem[stem], panels=panels) for stem, panels in content.items())


def panel_queries(catalog: Catalog) -> list[tuple[str, str, str, str]]:
    """Every (dashboard uid, panel title, datasource kind, query) the dashboards run."""
    return [(d.uid, p.title, p.datasource, q.expr) for d in dashboards(catalog) for p in d.panels for q in p.queries]
