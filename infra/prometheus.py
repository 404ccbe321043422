"""Prometheus: `prometheus.yml`, recording rules, alert rules and their promtool unit tests.

Recording rules carry the SLIs (error ratios per SLO over every burn-rate window, latency
quantiles, request rates); alert rules are the SRE workbook's multi-window multi-burn-rate
alerts per SLO plus the blueprint's own alerts (seed 004 §1.4).
"""

from __future__ import annotations

from infra import promql, rule_tests
from vigia import conventions as names
from vigia.model import Alert, Catalog, Metric, Slo, duration_seconds

def render(catalog: Catalog, profile: str) -> dict[str, object]:
    shards = catalog.profiles[profile].shards
    if shards > 1:
        files: dict[str, object] = {names.prometheus_shard_config(i): config(catalog, profile, shard=i) for i in range(shards)}
    else:
        files = {names.PROMETHEUS_CONFIG: config(catalog, profile)}
    return files | {
        names.SLO_RULES: {"groups": [sli_group(catalog)]},
        names.RECORDING_RULES: {"groups": [recording_group(catalog)]},
        names.ALERT_RULES: {"groups": alert_groups(catalog)},
    } | rule_tests.render(catalog)


def _host(catalog: Catalog, profile: str, service: str) -> str:
    return "127.0.0.1" if catalog.profiles[profile].host == "127.0.0.1" else service


def config(catalog: Catalog, profile: str, shard: int | None = None) -> dict:
    """One Prometheus, or (`shard` given) one hashmod shard of the scrape targets.

    A shard sees only part of the series, so it evaluates no rule and sends no alert: it scrapes
    and remote-writes. The remote store's ruler (e.g. Mimir's) evaluates the rule files on the
    whole data set and sends alerts to Alertmanager.
    """
    prof = catalog.profiles[profile]
    am = f"{_host(catalog, profile, 'alertmanager')}:{prof.alertmanager_port}"
    self_host = "prometheus" if shard is None else f"prometheus-shard-{shard}"
    targets = [("alertmanager", am, {})]
    if prof.host != "127.0.0.1":  # the OTel Collector runs beside the services, not in the embedded stack
        targets.append((names.OTEL_COLLECTOR_JOB, f"{names.OTEL_COLLECTOR_JOB}:{names.OTEL_PROMETHEUS_PORT}", {}))
    targets += [(c.name, f"{_host(catalog, profile, c.name)}:{c.port}", {"metrics_path": "/_metrics"})
                for c in catalog.components]
    scrape = [{
        "job_name": "prometheus",
        "static_configs": [{"targets": [f"{_host(catalog, profile, self_host)}:{prof.prometheus_port}"]}],
    }]
    for job, target, extra in targets:
        entry = {"job_name": job} | extra | {"static_configs": [{"targets": [target]}]}
        if job in {c.name for c in catalog.components}:
            entry["static_configs"][0]["labels"] = {"component": job}
        if shard is not None:
            entry["relabel_configs"] = [
                {"source_labels": ["__address__"], "modulus": prof.shards,
                 "target_label": "__tmp_hash", "action": "hashmod"},
                {"source_labels": ["__tmp_hash"], "regex": str(shard), "action": "keep"},
            ]
        scrape.append(entry)
    external = {"profile": profile, "project": catalog.project}
    if shard is not None:
        external["shard"] = str(shard)  # keeps series from different shards apart in the remote store
    out: dict = {"global": {"scrape_interval": prof.scrape_interval, "evaluation_interval": prof.evaluation_interval,
                            "external_labels": external}}
    if shard is None:
        out["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [am]}]}]}
        out["rule_files"] = [path.removeprefix("prometheus/") for path in names.RULE_FILES]
    out["scrape_configs"] = scrape
    if prof.remote_write_url:
        out["remote_write"] = [{
            "url": prof.remote_write_url,
            "queue_config": {"capacity": 10000, "max_shards": 50, "max_samples_per_send": 2000},
            "metadata_config": {"send": True},
        }]
    return out


# ---- recording rules -------------------------------------------------------------------------

def _slo_labels(slo: Slo) -> dict[str, str]:
    return {"slo": slo.name, "component": slo.component}


def sli_expr(catalog: Catalog, slo: Slo, window: str) -> str:
    metric = catalog.metric(slo.metric)
    if slo.kind == "latency":
        return promql.latency_error_ratio(catalog, metric, slo.threshold_seconds, window)
    return promql.error_ratio(catalog, metric, slo.errors, window)


def sli_group(catalog: Catalog) -> dict:
    """Per SLO and burn-rate window: the bad-event ratio and the event rate (the low-traffic guard)."""
    sli_rules = []
    for slo in catalog.slos:
        metric = catalog.metric(slo.metric)
        for window in catalog.sli_windows():
            sli_rules.append({"record": names.sli_error_ratio(window), "expr": sli_expr(catalog, slo, window),
                              "labels": _slo_labels(slo)})
            sli_rules.append({"record": names.sli_events_rate(window),
                              "expr": promql.event_rate(catalog, metric, window), "labels": _slo_labels(slo)})
    return {"name": names.RULE_GROUP_SLI, "rules": sli_rules}


def recording_group(catalog: Catalog) -> dict:
    """Latency quantiles (per route, and over internal routes) and counter rates over 5m."""
    latency_rules, rate_rules = [], []
    for metric in catalog.metrics:
        if metric.type == "histogram":
            by = _group_labels(metric)
            for q in names.LATENCY_QUANTILES:
                latency_rules.append({"record": names.latency_quantile_rule(metric.name, q),
                                      "expr": promql.quantile(metric, q, "5m", by)})
            if metric.http == "duration":  # the SLO's scope: every internal route together
                for q in names.LATENCY_QUANTILES:
                    latency_rules.append({"record": names.internal_latency_quantile_rule(metric.name, q),
                                          "expr": promql.quantile(metric, q, "5m", (), promql.scope(catalog, metric))})
        elif metric.type == "counter":
            by = ", ".join(sorted(metric.labels))
            expr = f"sum by ({by}) (rate({metric.name}[5m]))" if by else f"sum(rate({metric.name}[5m]))"
            rate_rules.append({"record": names.request_rate_rule(metric.name), "expr": expr})
    return {"name": names.RULE_GROUP_LATENCY, "rules": latency_rules + rate_rules}


def _group_labels(metric: Metric) -> tuple[str, ...]:
    """Per route for HTTP histograms; by the histogram's own labels otherwise."""
    if metric.http == "duration":
        return ("route",)
    return tuple(sorted(metric.labels))


# ---- alert rules -----------------------------------------------------------------------------

def _annotations(catalog: Catalog, name: str, summary: str, description: str) -> dict[str, str]:
    return {"summary": summary, "description": description,
            "runbook_url": f"{catalog.runbook_base_url}/{name}.md"}


def burn_rate_alerts(catalog: Catalog) -> list[dict]:
    rules = []
    for slo in catalog.slos:
        sel = f'{{slo="{slo.name}"}}'
        for tier in catalog.burn_rate_tiers:
            threshold = round(tier.factor * slo.error_budget, 10)
            expr = (
                f"(\n  {names.sli_error_ratio(tier.long)}{sel} > {threshold:g}\n"
                f"and\n  {names.sli_error_ratio(tier.short)}{sel} > {threshold:g}\n)\n"
                f"and\n  {names.sli_events_rate(tier.long)}{sel} > {catalog.min_rate(slo):g}"
            )
            rules.append({
                "alert": names.SLO_BURN_ALERT,
                "expr": expr,
                "for": tier.for_,
                "labels": {"severity": tier.severity, "slo": slo.name, "component": slo.component,
                           "burn_tier": f"{tier.factor:g}x", "long_window": tier.long, "short_window": tier.short},
                "annotations": _annotations(
                    catalog, names.SLO_BURN_ALERT,
                    f"{slo.name}: error budget burning at {tier.factor:g}x over {tier.long} and {tier.short}",
                    f"{slo.description} The bad-event ratio over {tier.long} and {tier.short} is above "
                    f"{tier.factor:g} x the {slo.error_budget:.2%} budget; at this pace the "
                    f"30-day budget is gone in {30 / tier.factor:.1f} days."),
            })
    return rules


def alert_expr(catalog: Catalog, alert: Alert) -> str:
    metric = catalog.metric(alert.metric) if alert.metric else None
    if alert.kind == "latency_quantile":
        scoped = promql.matchers({}, promql.scope(catalog, metric))
        parts = [f"histogram_quantile({alert.quantile:g}, sum by (le) (rate({metric.name}_bucket{scoped}[{w}])))"
                 f" > {alert.threshold:g}" for w in alert.windows]
        return "\nand\n".join(f"({p})" for p in parts)
    if alert.kind == "error_ratio":
        parts = [f"({promql.error_ratio(catalog, metric, alert.errors, c.window)}) > {c.above:g}\n"
                 f"  and\n  {promql.event_rate(catalog, metric, c.window)} > {catalog.min_rate(alert):g}"
                 for c in alert.conditions]
        return "\nor\n".join(f"(\n  {p}\n)" for p in parts)
    if alert.kind == "spike":
        by = ", ".join(alert.by)
        now = f"sum by ({by}) (rate({metric.name}[{alert.window}]))"
        base = f"sum by ({by}) (rate({metric.name}[{alert.baseline}]))"
        return f"({now} > {alert.factor:g} * {base})\nand\n({now} > {catalog.min_rate(alert):g})"
    if alert.kind == "threshold":
        return f"{metric.name} {alert.op} {alert.value:g}"
    if alert.kind == "target_down":
        jobs = "|".join(c.name for c in catalog.components)
        return f'label_replace(up{{job=~"{jobs}"}}, "component", "$1", "job", "(.*)") == 0'
    if alert.kind == "absent":
        return f"absent({metric.name})"
    return "vector(1)"


DESCRIPTIONS = {
    "latency_quantile": "p{q} latency of {metric} is above {threshold} s over every window ({windows}).",
    "error_ratio": "The ratio of {errors} among {metric} crossed its threshold ({conditions}) with at least "
                   "{min_rate} events/s; see the runbook's queries for the value.",
    "spike": "Tenant {{{{ $labels.tenant }}}} hits {metric} at over {factor}x its {baseline} baseline.",
    "threshold": "{metric} on {{{{ $labels.instance }}}} is {op} {value}.",
    "target_down": "Prometheus cannot scrape {{{{ $labels.instance }}}} (job {{{{ $labels.job }}}}).",
    "absent": "No series of {metric} exists: the exporter stopped emitting it or stopped being scraped.",
    "watchdog": "This alert always fires. If its notification stops arriving, the alerting pipeline is broken.",
}


def blueprint_alerts(catalog: Catalog) -> list[dict]:
    rules = []
    for alert in catalog.alerts:
        labels = {"severity": alert.severity}
        if alert.kind == "watchdog":
            labels["component"] = "vigia"
        elif alert.kind != "target_down":
            labels["component"] = alert.component
        description = DESCRIPTIONS[alert.kind].format(
            q=f"{(alert.quantile or 0) * 100:g}", metric=alert.metric, threshold=f"{alert.threshold or 0:g}",
            windows=", ".join(alert.windows), errors=promql.matchers(alert.errors), factor=f"{alert.factor or 0:g}",
            baseline=alert.baseline, op=alert.op, value=f"{alert.value or 0:g}", min_rate=f"{catalog.min_rate(alert):g}",
            conditions=" or ".join(f"> {c.above:.2%} over {c.window}" for c in alert.conditions))
        rule = {"alert": alert.name, "expr": alert_expr(catalog, alert)}
        if duration_seconds(alert.for_):
            rule["for"] = alert.for_
        rule["labels"] = labels
        rule["annotations"] = _annotations(catalog, alert.name, alert.summary, description)
        rules.append(rule)
    return rules


def alert_groups(catalog: Catalog) -> list[dict]:
    return [
        {"name": names.RULE_GROUP_SLO_ALERTS, "rules": burn_rate_alerts(catalog)},
        {"name": names.RULE_GROUP_ALERTS, "rules": blueprint_alerts(catalog)},
    ]
