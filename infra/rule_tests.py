"""promtool unit tests generated from the catalog: every alert fires when it should and not otherwise.

Scenarios are synthetic traffic at one-minute resolution. For SLO burn-rate alerts every SLO
runs the same shaped scenario in one test group (each on its own metric): for each tier, a
steady burn between that tier's threshold and the next tier's, evaluated after the tier's `for`
but before slower tiers can fire; a burst confined to the tier's short window (must not fire);
and a full outage at low traffic (the guard must hold it back). Blueprint alerts get their own
firing and quiet cases. Watchdog can only fire: it has no quiet case by design.
"""

from __future__ import annotations

import math
import re

from infra import prometheus
from vigia import conventions as names
from vigia.model import Alert, Catalog, Metric, Slo, duration_seconds

# Events per minute in the synthetic traffic: 100/s, so even a 3d window's rate (which divides by
# the whole window) clears the low-traffic guard within minutes of the series starting.
RATE = 6000.0
# Tiers whose short window is 30m or longer are tested at a 5-minute step in a second file:
# their 6h-3d windows over one-minute samples would make promtool take minutes.
SLOW_TIER_SHORT_WINDOW = 1800
SLOW_STEP = 5
Phase = tuple[float, int, float]  # (bad fraction, minutes, events per minute)


def render(catalog: Catalog) -> dict[str, dict]:
    fast = [t for t in burn_rate_tests(catalog, slow=False)] + blueprint_tests(catalog)
    return {names.RULE_TESTS: _test_file(fast, step=1),
            names.RULE_TESTS_SLOW: _test_file(burn_rate_tests(catalog, slow=True), step=SLOW_STEP)}


def _test_file(tests: list[dict], step: int) -> dict:
    return {"rule_files": ["../rules/recording.yml", "../rules/alerts.yml"],
            "evaluation_interval": f"{step}m", "tests": tests}


# ---- series notation -------------------------------------------------------------------------

def _num(value: float) -> str:
    return f"{round(value, 6):g}"


def counter_values(increments: list[tuple[float, int]], step: int = 1) -> str:
    """promtool expanding notation for a counter growing by `inc` per minute for `n` minutes, per phase,
    sampled every `step` minutes."""
    parts, value = ["0"], 0.0
    for inc, minutes in increments:
        inc, steps = inc * step, minutes // step
        if steps <= 0:
            continue
        start = value + inc
        parts.append(f"{_num(start)}+{_num(inc)}x{steps - 1}")
        value = start + inc * (steps - 1)
    return " ".join(parts)


def _series(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def _base_labels(catalog: Catalog, metric: Metric) -> dict[str, str]:
    labels = {"job": metric.component, "instance": f"{metric.component}:{catalog.component(metric.component).port}"}
    if "route" in metric.labels:
        labels["route"] = catalog.component(metric.component).routes[0].path
    return labels


def _split_labels(catalog: Catalog, metric: Metric, errors: dict[str, str]) -> tuple[dict, dict]:
    """Label values of a good and a bad event: the first closed-set value (not) matching each matcher."""
    good, bad = {}, {}
    for label, pattern in errors.items():
        values = catalog.label_values(metric, label)
        bad[label] = next(v for v in values if re.fullmatch(pattern, v))
        good[label] = next(v for v in values if not re.fullmatch(pattern, v))
    return good, bad


def counter_series(catalog: Catalog, metric: Metric, errors: dict[str, str], phases: list[Phase],
                   step: int = 1) -> list[dict]:
    good, bad = _split_labels(catalog, metric, errors)
    base = _base_labels(catalog, metric)
    return [
        {"series": _series(metric.name, base | good),
         "values": counter_values([(rate * (1 - frac), mins) for frac, mins, rate in phases], step)},
        {"series": _series(metric.name, base | bad),
         "values": counter_values([(rate * frac, mins) for frac, mins, rate in phases], step)},
    ]


def histogram_series(catalog: Catalog, metric: Metric, threshold: float, phases: list[Phase],
                     step: int = 1) -> list[dict]:
    """Fast events land in the first bucket, slow ones in the first bucket above the threshold."""
    bounds = catalog.bucket_bounds(metric)
    slow_le = next(b for b in bounds if b > threshold)
    base = _base_labels(catalog, metric)
    series = []
    for le in bounds:
        incs = [(rate * ((1 - frac) * (le >= bounds[0]) + frac * (le >= slow_le)), mins) for frac, mins, rate in phases]
        series.append({"series": _series(f"{metric.name}_bucket", base | {"le": repr(float(le))}),
                       "values": counter_values(incs, step)})
    total = [(rate, mins) for _, mins, rate in phases]
    series.append({"series": _series(f"{metric.name}_bucket", base | {"le": "+Inf"}),
                   "values": counter_values(total, step)})
    series.append({"series": _series(f"{metric.name}_count", base), "values": counter_values(total, step)})
    return series


def slo_series(catalog: Catalog, slo: Slo, phases: list[Phase], step: int = 1) -> list[dict]:
    metric = catalog.metric(slo.metric)
    if slo.kind == "latency":
        return histogram_series(catalog, metric, slo.threshold_seconds, phases, step)
    return counter_series(catalog, metric, slo.errors, phases, step)


# ---- SLO burn-rate tests ---------------------------------------------------------------------

def _minutes(duration: str) -> int:
    return int(duration_seconds(duration) // 60)


def _burn_alert(catalog: Catalog, slo: Slo, tier) -> dict:
    rule = next(r for r in prometheus.burn_rate_alerts(catalog)
                if r["labels"]["slo"] == slo.name and r["labels"]["burn_tier"] == f"{tier.factor:g}x")
    return {"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}


def burn_rate_tests(catalog: Catalog, slow: bool) -> list[dict]:
    """Tests of the fast tiers (slow=False, one-minute step) or of the slow ones (five-minute step)."""
    tiers = sorted(catalog.burn_rate_tiers, key=lambda t: -t.factor)
    tests = []
    for i, tier in enumerate(tiers):
        if (duration_seconds(tier.short) >= SLOW_TIER_SHORT_WINDOW) != slow:
            continue
        step = SLOW_STEP if slow else 1
        faster = tiers[i - 1] if i else None
        slower = tiers[i + 1] if i + 1 < len(tiers) else None
        # Steady burn between this tier's threshold and the faster tier's, so only this tier can fire.
        eval_min = _minutes(tier.for_) + 6 * step
        if slower:
            assert eval_min < _minutes(slower.for_), "tier `for` durations must grow as factors shrink"
        series, expected = [], []
        for slo in catalog.slos:
            low = tier.factor * slo.error_budget
            high = min(1.0, faster.factor * slo.error_budget) if faster else 1.0
            series += slo_series(catalog, slo, [(math.sqrt(low * high), eval_min, RATE)], step)
            expected.append(_burn_alert(catalog, slo, tier))
        tests.append(_group(f"SLO burn {tier.factor:g}x over {tier.long} and {tier.short} fires for every SLO",
                            series, [(eval_min, names.SLO_BURN_ALERT, expected)], step))
        # A burst confined to the short window: the long window stays under the threshold.
        long_min, short_min = _minutes(tier.long), _minutes(tier.short)
        series = []
        for slo in catalog.slos:
            threshold = tier.factor * slo.error_budget
            ceiling = min(1.0, threshold * long_min / short_min)
            series += slo_series(catalog, slo, [(0.0, long_min, RATE), (math.sqrt(threshold * ceiling), short_min, RATE)],
                                 step)
        tests.append(_group(f"SLO burn {tier.factor:g}x in the {tier.short} window only does not fire",
                            series, [(long_min + short_min, names.SLO_BURN_ALERT, [])], step))
    if slow:
        return tests
    first = tiers[0]
    series = []
    slow = catalog.low_traffic_min_rate * 60 / 2  # half the guard's rate, per minute
    for slo in catalog.slos:
        series += slo_series(catalog, slo, [(1.0, _minutes(first.for_) + 20, slow)])
    tests.append(_group("A total outage at low traffic stays quiet (low-traffic guard)",
                        series, [(_minutes(first.for_) + 20, names.SLO_BURN_ALERT, [])]))
    return tests


# ---- blueprint alert tests -------------------------------------------------------------------

def _expect(catalog: Catalog, alert: Alert, extra: dict[str, str] | None = None) -> dict:
    rule = next(r for r in prometheus.blueprint_alerts(catalog) if r["alert"] == alert.name)
    labels = dict(extra or {}) | rule["labels"]
    annotations = {k: _fill(v, labels) for k, v in rule["annotations"].items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


def _fill(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def blueprint_tests(catalog: Catalog) -> list[dict]:
    tests = []
    for alert in catalog.alerts:
        tests += CASES[alert.kind](catalog, alert)
    return tests


def _latency_quantile(catalog: Catalog, alert: Alert) -> list[dict]:
    metric = catalog.metric(alert.metric)
    longest = max(_minutes(w) for w in alert.windows)
    shortest = min(_minutes(w) for w in alert.windows)
    slow_share_short = 3 * (1 - alert.quantile)  # above the quantile in the short window, diluted in the long one
    run = longest + 10
    return [
        _group(f"{alert.name} fires when every request is slower than {alert.threshold:g} s",
               histogram_series(catalog, metric, alert.threshold, [(1.0, run, RATE)]),
               [(run, alert.name, [_expect(catalog, alert)])]),
        _group(f"{alert.name} stays quiet when only the {shortest}m window is slow",
               histogram_series(catalog, metric, alert.threshold,
                                [(0.0, run - shortest, RATE), (slow_share_short, shortest, RATE)]),
               [(run, alert.name, [])]),
        _group(f"{alert.name} stays quiet when requests are fast",
               histogram_series(catalog, metric, alert.threshold, [(0.0, run, RATE)]),
               [(run, alert.name, [])]),
    ]


def _error_ratio(catalog: Catalog, alert: Alert) -> list[dict]:
    metric = catalog.metric(alert.metric)
    tests = []
    lowest = min(c.above for c in alert.conditions)
    longest = max(_minutes(c.window) for c in alert.conditions)
    hold = _minutes(alert.for_) + 5
    for cond in sorted(alert.conditions, key=lambda c: duration_seconds(c.window)):
        if alert.combine == "or":
            # Between this condition's threshold and every other one's: only this branch can be true.
            others = [c.above for c in alert.conditions if c is not cond and c.above > cond.above]
            frac = math.sqrt(cond.above * min(others)) if others else cond.above * 3
            run = _minutes(cond.window) + hold
        else:
            frac, run = max(c.above for c in alert.conditions) * 3, longest + hold
        tests.append(_group(
            f"{alert.name} fires at {frac:.3%} bad over {cond.window}",
            counter_series(catalog, metric, alert.errors, [(frac, run, RATE)]),
            [(run, alert.name, [_expect(catalog, alert)])]))
        if alert.combine == "and":
            break
    run = longest + hold
    tests.append(_group(f"{alert.name} stays quiet at {lowest / 2:.3%} bad",
                        counter_series(catalog, metric, alert.errors, [(lowest / 2, run, RATE)]),
                        [(run, alert.name, [])]))
    return tests


def _spike(catalog: Catalog, alert: Alert) -> list[dict]:
    metric = catalog.metric(alert.metric)
    base_min, win_min = _minutes(alert.baseline), _minutes(alert.window)
    tenant = catalog.tenants[0]
    labels = _base_labels(catalog, metric) | {label: catalog.label_values(metric, label)[0]
                                              for label in metric.labels if label != "tenant"}
    series = _series(metric.name, labels | {"tenant": tenant})
    quiet_rate = alert.min_rate * 60 / 2
    spike_rate = alert.min_rate * 60 * alert.factor * 4
    hold = _minutes(alert.for_) + win_min
    run = base_min + hold
    steady_high = alert.min_rate * 60 * 4
    return [
        _group(f"{alert.name} fires when one tenant jumps far above its baseline",
               [{"series": series, "values": counter_values([(quiet_rate, base_min), (spike_rate, hold)])}],
               [(run, alert.name, [_expect(catalog, alert, {"tenant": tenant})])]),
        _group(f"{alert.name} stays quiet for a tenant that is steadily busy",
               [{"series": series, "values": counter_values([(steady_high, run)])}],
               [(run, alert.name, [])]),
    ]


def _threshold(catalog: Catalog, alert: Alert) -> list[dict]:
    metric = catalog.metric(alert.metric)
    labels = _base_labels(catalog, metric)
    series = _series(metric.name, labels)
    over = alert.value + 1
    under = max(alert.value - 1, 0)
    steps = " ".join(_num(v) for v in [0, under, over, over, over])
    return [
        _group(f"{alert.name} fires when {metric.name} {alert.op} {alert.value:g}",
               [{"series": series, "values": steps}],
               [(4 + _minutes(alert.for_), alert.name, [_expect(catalog, alert, labels)])]),
        _group(f"{alert.name} stays quiet below {alert.value:g}",
               [{"series": series, "values": " ".join(_num(v) for v in [0, under, 0, under, 0])}],
               [(4, alert.name, [])]),
    ]


def _target_down(catalog: Catalog, alert: Alert) -> list[dict]:
    component = catalog.components[0]
    labels = {"job": component.name, "instance": f"{component.name}:{component.port}"}
    run = _minutes(alert.for_) + 3
    return [
        _group(f"{alert.name} fires when {component.name} stops answering scrapes",
               [{"series": _series("up", labels), "values": f"1 0x{run}"}],
               [(run, alert.name, [_expect(catalog, alert, labels | {"component": component.name})])]),
        _group(f"{alert.name} stays quiet while {component.name} is up",
               [{"series": _series("up", labels), "values": f"1x{run}"}],
               [(run, alert.name, [])]),
    ]


def _absent(catalog: Catalog, alert: Alert) -> list[dict]:
    metric = catalog.metric(alert.metric)
    run = _minutes(alert.for_) + 2
    present = _series(metric.name, _base_labels(catalog, metric))
    other = _series("up", {"job": metric.component, "instance": "x"})
    return [
        _group(f"{alert.name} fires when {metric.name} is gone",
               [{"series": other, "values": f"1x{run}"}],
               [(run, alert.name, [_expect(catalog, alert)])]),
        _group(f"{alert.name} stays quiet while {metric.name} is reported",
               [{"series": present, "values": f"0+1x{run}"}],
               [(run, alert.name, [])]),
    ]


def _watchdog(catalog: Catalog, alert: Alert) -> list[dict]:
    return [_group(f"{alert.name} always fires", [{"series": 'up{job="prometheus"}', "values": "1x5"}],
                   [(1, alert.name, [_expect(catalog, alert)])])]


CASES = {
    "latency_quantile": _latency_quantile,
    "error_ratio": _error_ratio,
    "spike": _spike,
    "threshold": _threshold,
    "target_down": _target_down,
    "absent": _absent,
    "watchdog": _watchdog,
}


def _group(name: str, series: list[dict], checks: list[tuple[int, str, list[dict]]], step: int = 1) -> dict:
    return {
        "name": name,
        "interval": f"{step}m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": f"{minute}m", "alertname": alertname, "exp_alerts": expected}
                            for minute, alertname, expected in checks],
    }
