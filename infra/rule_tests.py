"""promtool unit tests generated from the catalog: every alert fires when it should and not otherwise.

Each case is synthetic traffic, one sample per step, evaluated once at its end. Cases sit at the
boundaries: a value just above a threshold fires (ABOVE x the threshold), just below stays quiet
(BELOW x), traffic under the low-traffic guard stays quiet, and a multi-window alert stays quiet
when only its short window burns and when only its long window still does (the short one has
recovered). Watchdog can only fire: it has no quiet case by design.

SLO burn-rate tiers get one test group per SLO and case. Two devices keep the other tiers out of
a tier's cases: every bad fraction stays under the next faster tier's threshold, and each series
starts with a short burst of good traffic large enough that the slower tiers' longer windows
(which still hold it) stay far under their thresholds. The tier's own windows have slid past it by
the time of the evaluation. Each tier steps at the coarsest of STEPS that fits six times into its
short window, in a test file of its own (promtool's evaluation interval is per file).
"""

from __future__ import annotations

import math
import re

from infra import prometheus
from vigia import conventions as names
from vigia.model import Alert, BurnRateTier, Catalog, Metric, Slo, duration_seconds

ABOVE, BELOW = 1.25, 0.8  # just above / just below a threshold, as a multiple of it
GUARD_MARGIN = 4.0  # traffic of firing cases, as a multiple of the low-traffic guard (quiet cases: 1 / 2)
RATE = 600.0  # events per minute of alerts without a guard
RECOVERED = 0.01  # traffic after a recovery, as a share of the traffic before it
STEPS = (60, 30, 15, 5, 1)  # candidate steps of a tier's series, in minutes
Phase = tuple[float, int, float]  # (bad fraction, minutes, events per minute)


def render(catalog: Catalog) -> dict[str, dict]:
    by_step: dict[int, list[dict]] = {}
    for tier in catalog.burn_rate_tiers:
        by_step.setdefault(tier_step(tier), []).extend(burn_rate_tests(catalog, tier))
    files = {names.burn_rule_tests(step): _test_file(tests, step, recorded=True) for step, tests in sorted(by_step.items())}
    # The blueprint alerts read raw series only: their tests skip the SLI rules (4x faster).
    return files | {names.RULE_TESTS: _test_file(blueprint_tests(catalog), 1, recorded=False)}


def _test_file(tests: list[dict], step: int, recorded: bool) -> dict:
    """Only the rule files the alerts read (each rule costs promtool time at every step). The SLI
    group is evaluated before the alert groups at each step: promtool's default order is random,
    and with a step longer than the 5m lookback an alert would miss the recorded value."""
    rules = [names.SLO_RULES, names.ALERT_RULES] if recorded else [names.ALERT_RULES]
    rule_files = [f"../{path.removeprefix('prometheus/')}" for path in rules]
    order = [names.RULE_GROUP_SLI] if recorded else []
    return {"rule_files": rule_files, "evaluation_interval": f"{step}m",
            "group_eval_order": order + [names.RULE_GROUP_SLO_ALERTS, names.RULE_GROUP_ALERTS], "tests": tests}


def _minutes(duration: str) -> int:
    return int(duration_seconds(duration) // 60)


# ---- series notation -------------------------------------------------------------------------

def _num(value: float) -> str:
    return f"{round(value, 6):.12g}"


def counter_values(increments: list[tuple[float, int]], step: int = 1) -> str:
    """promtool expanding notation for a counter growing by `inc` per minute for `n` minutes, per phase,
    sampled every `step` minutes (phases last whole steps)."""
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
    """Label values of a good and a bad event: the first closed-set value (not) matching each matcher
    (the catalog's cross-check guarantees both exist)."""
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
    """Fast events land in the bucket ending at the threshold, slow ones in the next bucket up, so a
    quantile sits just under the threshold until the slow share passes 1 - quantile."""
    bounds = catalog.bucket_bounds(metric)
    fast_le = max(b for b in bounds if b <= threshold)
    slow_le = min((b for b in bounds if b > threshold), default=math.inf)
    base = _base_labels(catalog, metric)
    series = []
    for le in bounds:
        incs = [(rate * ((1 - frac) * (le >= fast_le) + frac * (le >= slow_le)), mins) for frac, mins, rate in phases]
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

def tier_step(tier: BurnRateTier) -> int:
    """The coarsest step (minutes) that divides the tier's windows and `for` and fits six times into its short window."""
    spans = [_minutes(tier.long), _minutes(tier.short), _minutes(tier.for_)]
    return next((s for s in STEPS if s * 6 <= spans[1] and all(span % s == 0 for span in spans)), 1)


def _burn_alert(catalog: Catalog, slo: Slo, tier: BurnRateTier) -> dict:
    rule = next(r for r in prometheus.burn_rate_alerts(catalog)
                if r["labels"]["slo"] == slo.name and r["labels"]["burn_tier"] == f"{tier.factor:g}x")
    return {"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}


def burn_rate_tests(catalog: Catalog, tier: BurnRateTier) -> list[dict]:
    """Five cases, each one test group for every SLO (each on its own metric): a burn just above
    the tier's threshold fires; just below, under the low-traffic guard, in the short window only,
    or in the long window only, it stays quiet."""
    tiers = catalog.burn_rate_tiers  # fastest first (cross-checked)
    i = tiers.index(tier)
    step = tier_step(tier)
    long, short, hold = _minutes(tier.long), _minutes(tier.short), _minutes(tier.for_)
    steady = long + hold + 2 * step  # the long window slides past the opening, then `for` passes
    burst = short + hold + step
    tail = short + 2 * step
    title = f"{tier.factor:g}x burn over {tier.long} and {tier.short}"
    cases: dict[str, list[tuple[Slo, list[Phase], bool]]] = {}
    for slo in catalog.slos:
        threshold = tier.factor * slo.error_budget
        cap = min(1.0, tiers[i - 1].factor * slo.error_budget) if i else 1.0  # the faster tier's threshold
        rate = GUARD_MARGIN * catalog.min_rate(slo) * 60
        above = min(ABOVE * threshold, math.sqrt(threshold * cap))
        # Only the short window: the burst, diluted over the long window, stays under the threshold there.
        in_short = math.sqrt(threshold * min(cap, threshold * long / burst))
        # Only the long window: a burn, then a recovery at a trickle of traffic for the short window.
        kept = (long - tail) / (long - tail + RECOVERED * tail)
        in_long = math.sqrt(threshold / kept * cap) if threshold / kept < cap else cap
        for case, phases, fires in (
            ("fires just above the threshold", [(above, steady, rate)], True),
            ("stays quiet just below the threshold", [(BELOW * threshold, steady, rate)], False),
            ("stays quiet under the low-traffic guard", [(above, steady, rate / GUARD_MARGIN / 2)], False),
            (f"stays quiet when only the {tier.short} window burns", [(0.0, long + step, rate), (in_short, burst, rate)], False),
            (f"stays quiet once the {tier.short} window has recovered and only the {tier.long} one burns",
             [(in_long, long + hold + step - tail, rate), (0.0, tail, rate * RECOVERED)], False),
        ):
            slowest = tiers[-1].factor * slo.error_budget if i + 1 < len(tiers) else None
            cases.setdefault(case, []).append((slo, _opening(phases, slowest, step), fires))
    tests = []
    for case, runs in cases.items():
        for part, batch in enumerate(_distinct_metrics(runs)):
            minutes = sum(p[1] for p in batch[0][1])
            suffix = f" ({part + 1})" if part else ""
            tests.append(_group(
                f"SLO {title} {case}{suffix}",
                [s for slo, phases, _ in batch for s in slo_series(catalog, slo, phases, step)],
                [(minutes, names.SLO_BURN_ALERT, [_burn_alert(catalog, slo, tier) for slo, _, fires in batch if fires])],
                step))
    return tests


def _distinct_metrics(runs: list) -> list[list]:
    """Split runs into batches in which no two SLOs share a metric (their series would collide)."""
    batches: list[list] = []
    for run in runs:
        batch = next((b for b in batches if all(other[0].metric != run[0].metric for other in b)), None)
        if batch is None:
            batches.append(batch := [])
        batch.append(run)
    return batches


def _opening(phases: list[Phase], slowest: float | None, step: int) -> list[Phase]:
    """Prepend two steps of good traffic that keep every slower tier's long window (which holds
    the whole series) under half the slowest tier's threshold."""
    events = sum(mins * rate for _, mins, rate in phases)
    bad = sum(frac * mins * rate for frac, mins, rate in phases)
    good_per_minute = max(events, 2 * bad / slowest) / (2 * step) if slowest else phases[0][2]
    return [(0.0, 2 * step, good_per_minute)] + phases


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
    """Fires when the slow share is just above 1 - quantile in every window; quiet just below it,
    when only the shortest window is slow, and when the shortest window has recovered."""
    metric = catalog.metric(alert.metric)
    windows = sorted(_minutes(w) for w in alert.windows)
    shortest, longest = windows[0], windows[-1]
    hold = _minutes(alert.for_)
    budget = 1 - alert.quantile  # the slow share at which the quantile reaches the threshold
    run = longest + hold + 2
    burst = shortest + hold + 1
    next_window = windows[1] if len(windows) > 1 else longest
    in_short = math.sqrt(budget * min(1.0, budget * next_window / burst))
    tail = shortest + 2
    in_long = math.sqrt(budget * longest / (longest - tail))  # geometric mean of just enough and all
    cases = [
        (f"fires when {ABOVE * budget:.2%} of requests are slower than {alert.threshold:g} s",
         [(ABOVE * budget, run, RATE)], [_expect(catalog, alert)]),
        (f"stays quiet when {BELOW * budget:.2%} of requests are slower than {alert.threshold:g} s",
         [(BELOW * budget, run, RATE)], []),
        (f"stays quiet when only the {shortest}m window is slow", [(0.0, longest, RATE), (in_short, burst, RATE)], []),
        (f"stays quiet once the {shortest}m window has recovered", [(in_long, longest + hold + 1, RATE), (0.0, tail, RATE)], []),
    ]
    return [_group(f"{alert.name} {case}", histogram_series(catalog, metric, alert.threshold, phases),
                   [(sum(p[1] for p in phases), alert.name, expected)])
            for case, phases, expected in cases]


def _error_ratio(catalog: Catalog, alert: Alert) -> list[dict]:
    """Per condition: just above its threshold fires, just below or under the guard stays quiet.

    Conditions are OR'ed and a longer window has a lower threshold (cross-checked), so a case holds
    the other conditions off: its bad fraction stays under every shorter window's threshold, and
    good traffic before it dilutes every longer window.
    """
    metric = catalog.metric(alert.metric)
    conditions = sorted(alert.conditions, key=lambda c: duration_seconds(c.window))
    longest = _minutes(conditions[-1].window)
    hold = _minutes(alert.for_)
    rate = GUARD_MARGIN * catalog.min_rate(alert) * 60
    tests = []
    for k, cond in enumerate(conditions):
        cap = conditions[k - 1].above if k else 1.0
        above = min(ABOVE * cond.above, math.sqrt(cond.above * cap))
        span = _minutes(cond.window) + hold + 2
        for case, frac, traffic, expected in (
            (f"fires at {above:.3%} bad over {cond.window}", above, rate, [_expect(catalog, alert)]),
            (f"stays quiet at {BELOW * cond.above:.3%} bad over {cond.window}", BELOW * cond.above, rate, []),
            (f"stays quiet at {above:.3%} bad over {cond.window} under the low-traffic guard", above, rate / GUARD_MARGIN / 2, []),
        ):
            phases = [(frac, span, traffic)]
            if longest > span:
                phases.insert(0, (0.0, longest - span, _diluting(conditions[k + 1:], frac, span, traffic, longest)))
            tests.append(_group(f"{alert.name} {case}", counter_series(catalog, metric, alert.errors, phases),
                                [(sum(p[1] for p in phases), alert.name, expected)]))
    return tests


def _diluting(longer: list, frac: float, span: int, rate: float, longest: int) -> float:
    """Good events per minute before a `span`-minute burn that keep every longer window under half its threshold."""
    need = [rate * span * (2 * frac / c.above - 1) / (_minutes(c.window) - span)
            for c in longer if _minutes(c.window) > span]
    return max([rate] + need)


def _spike(catalog: Catalog, alert: Alert) -> list[dict]:
    """One group's rate (e.g. one tenant's) jumps to ABOVE x factor over its baseline (which the
    jump itself raises) and fires; to BELOW x factor, or with the jump under min_rate, it stays quiet."""
    metric = catalog.metric(alert.metric)
    baseline, window, hold = _minutes(alert.baseline), _minutes(alert.window), _minutes(alert.for_)
    factor = alert.factor
    labels = _base_labels(catalog, metric) | {label: catalog.label_values(metric, label)[0] for label in metric.labels}
    group = {label: labels[label] for label in alert.by}
    series = _series(metric.name, labels)
    jump = window + hold
    high = GUARD_MARGIN * catalog.min_rate(alert) * 60
    low = catalog.min_rate(alert) * 60 / 2
    # Rate before the jump that puts the ratio at m x factor `at` minutes into it.
    def before(peak: float, m: float, at: int) -> float:
        return peak * (baseline - m * factor * at) / (m * factor * (baseline - at))
    m = min(ABOVE, (1 + baseline / (factor * jump)) / 2)
    cases = [
        (f"fires when one {'/'.join(alert.by)} jumps to {m * factor:g}x its baseline", before(high, m, jump), high,
         [_expect(catalog, alert, group)]),
        (f"stays quiet when the jump peaks at {BELOW * factor:g}x the baseline", before(high, BELOW, window), high, []),
        (f"stays quiet when the jump stays under {catalog.min_rate(alert):g}/s", low / factor / 10, low, []),
    ]
    return [_group(f"{alert.name} {case}", [{"series": series, "values": counter_values([(q, baseline), (p, jump)])}],
                   [(baseline + jump, alert.name, expected)])
            for case, q, p, expected in cases]


def _threshold(catalog: Catalog, alert: Alert) -> list[dict]:
    """The series sits on the first value that satisfies the comparison, or on the last that does not."""
    metric = catalog.metric(alert.metric)
    labels = _base_labels(catalog, metric)
    series = _series(metric.name, labels)
    v = alert.value
    fire, quiet = {">=": (v, v - 1), ">": (v + 1, v), "<=": (v, v + 1), "<": (v - 1, v), "==": (v, v + 1)}[alert.op]
    run = _minutes(alert.for_) + 2
    return [
        _group(f"{alert.name} fires when {metric.name} is {_num(fire)}",
               [{"series": series, "values": f"{_num(fire)}x{run}"}],
               [(run, alert.name, [_expect(catalog, alert, labels)])]),
        _group(f"{alert.name} stays quiet when {metric.name} is {_num(quiet)}",
               [{"series": series, "values": f"{_num(quiet)}x{run}"}],
               [(run, alert.name, [])]),
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
