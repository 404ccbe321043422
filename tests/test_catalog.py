"""A wrong catalog fails with one line naming file, line and path (exit 2); the real one loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vigia import catalog as catalog_mod

# (text to replace, replacement, expected start of the message after `file:line: `, text on the named line)
BROKEN = [
    pytest.param("objective: 99.7", "objective: 120", "slos[0].objective: must be < 100", "objective: 120",
                 id="an objective of 120 % is refused"),
    pytest.param("metric: core_rate_limit_hits_total\n    by", "metric: core_nope_total\n    by",
                 "alerts[6].metric: unknown metric 'core_nope_total'", "core_nope_total",
                 id="an alert on an unknown metric is refused"),
    pytest.param("threshold_seconds: 0.5", "threshold_seconds: 0.4",
                 "slos[5].threshold_seconds: 0.4 is not a bucket boundary", "threshold_seconds: 0.4",
                 id="an SLO threshold off the bucket grid is refused"),
    pytest.param("threshold: 0.3\n    windows", "threshold: 0.35\n    windows",
                 "alerts[0].threshold: 0.35 is not a bucket boundary", "threshold: 0.35",
                 id="a latency alert threshold off the bucket grid is refused"),
    pytest.param("errors: {code: \"5..\"}\n  - name: gateway-latency", "errors: {status: \"5..\"}\n  - name: gateway-latency",
                 "slos[0].errors.status: gateway_http_requests_total has no label 'status'", "status",
                 id="an SLO on an undefined label is refused"),
    pytest.param("err: BACKPRESSURE}", "err: BACKPRESURE}",
                 "alerts[4].errors.err: err='BACKPRESURE' matches none of the label's values", "BACKPRESURE",
                 id="a typo in an alert's label value is refused"),
    pytest.param("errors: {decision: backpressure}", "errors: {decision: backpresure}",
                 "slos[6].errors.decision: decision='backpresure' matches none", "backpresure",
                 id="a typo in an SLO's label value is refused"),
    pytest.param("errors: {code: \"5..\"}", "errors: {code: \"5[\"}",
                 "slos[0].errors.code: code='5[' is not a valid regular expression", "5[",
                 id="a matcher that is not a regular expression is refused"),
    pytest.param("errors: {code: \"5..\"}", "errors: {code: \".*\"}",
                 "slos[0].errors.code: code='.*' matches every value of the label", ".*",
                 id="a matcher that makes every event bad is refused"),
    pytest.param("    objective: 99.7\n    metric: gateway_http_requests_total",
                 "    objective: 99.7\n    objective: 99.0\n    metric: gateway_http_requests_total",
                 "slos[0].objective: duplicate key (first on line", "objective: 99.0",
                 id="a duplicate key is refused, not silently overwritten"),
    pytest.param("{window: 1h, above: 0.003}", "{window: 1h, above: 3}",
                 "alerts[2].conditions[1].above: must be < 1", "above: 3", id="a ratio threshold of 3 is refused"),
    pytest.param("[{window: 5m, above: 0.01}, {window: 1h, above: 0.003}]", "[{window: 5m, above: 0.01}, {window: 1h, above: 0.02}]",
                 "alerts[2].conditions[1].above: a longer window needs a lower threshold", "above: 0.02",
                 id="an OR'ed longer window with a higher threshold is refused"),
    pytest.param("windows: [5m, 30m]", "windows: [5m, 30x]", "alerts[0].windows[1]: '30x' is not a Prometheus duration",
                 "30x", id="a bad window names its index"),
    pytest.param("{severity: page, factor: 14.4, long: 1h, short: 5m, for: 2m}",
                 "{severity: page, factor: 14.4, long: 1h, short: 2h, for: 2m}",
                 "burn_rate_tiers[0].short: must be at most a quarter of the long window (1h)", "short: 2h",
                 id="a tier whose short window is not shorter than its long one is refused"),
    pytest.param("{severity: page, factor: 14.4, long: 1h, short: 5m, for: 2m}",
                 "{severity: page, factor: 14.4, long: 1h, short: 5m, for: 10m}",
                 "burn_rate_tiers[0].for: must be shorter than the short window (5m)", "for: 10m",
                 id="a tier whose for outlasts its short window is refused"),
    pytest.param("{severity: page, factor: 14.4, long: 1h, short: 5m, for: 2m}",
                 "{severity: page, factor: 14.4, long: 1h, short: 90s, for: 1m}",
                 "burn_rate_tiers[0].short: '90s' must be a whole number of minutes", "short: 90s",
                 id="a tier window that is not whole minutes is refused"),
    pytest.param("{severity: page, factor: 6, long: 6h", "{severity: page, factor: 14.4, long: 6h",
                 "burn_rate_tiers[1].factor: must be below the previous tier's (14.4)", "factor: 14.4, long: 6h",
                 id="tiers out of order are refused"),
    pytest.param("factor: 1, long: 3d, short: 6h", "factor: 1, long: 30d, short: 6h",
                 "burn_rate_tiers[3].long: longer than the metrics retention (14d)", "long: 30d",
                 id="a tier window beyond the metrics retention is refused"),
    pytest.param("objective: 95.0", "objective: 90.0",
                 "slos[5].objective: the 14.4x tier would need more than 100 % bad events", "objective: 90.0",
                 id="an SLO whose fastest tier can never fire is refused"),
    pytest.param("min_rate: 0.01", "min_rate: 0", "slos[5].min_rate: must be > 0", "min_rate: 0",
                 id="a low-traffic guard of 0 is refused"),
    pytest.param("    baseline: 1h", "    baseline: 20m",
                 "alerts[6].baseline: must be longer than factor x (window + for) = 21m", "baseline: 20m",
                 id="a spike baseline the spike itself outweighs is refused"),
    pytest.param("{name: policy_http_requests_total, component: policy, type: counter, http: requests,",
                 "{name: policy_http_requests_total, component: policy, type: counter,",
                 "components[1]: component 'policy' has no metric with http: requests", "- name: policy",
                 id="a component without HTTP metrics names its index"),
    pytest.param("{name: media_presign_total,", "{name: media_presigns_total,",
                 "metrics: the Gateway dashboard reads media_presign_total, which the catalog does not define", "metrics:",
                 id="a metric a dashboard reads cannot be renamed away"),
    pytest.param("labels: {dest: webhook_dest, ok: ok}}", "labels: {dest: webhook_dest}}",
                 "metrics[5].labels: the Gateway dashboard reads webhook_delivery_total by 'ok'", "webhook_delivery_total",
                 id="a label a dashboard groups by cannot be dropped"),
    pytest.param("  max_value_length: 128", "  max_value_length: 128\n  colour: blue",
                 "logs.colour: unknown key", "colour", id="an unknown key is refused"),
    pytest.param("    tenant: token", "    Tenant-Id: token",
                 "logs.fields.Tenant-Id: String should match pattern '^[a-z_][a-z0-9_]*$'", "Tenant-Id",
                 id="a log field that cannot be a JSON key and a column name is refused"),
    pytest.param("project: vigia", "project: [vigia", "invalid YAML", "", id="bad YAML is refused"),
    pytest.param("{name: gateway_jwks_refresh_total,", "{name: gateway_jwks_refresh,",
                 "metrics[3]: counter names end in _total", "gateway_jwks_refresh,", id="a counter without _total is refused"),
]


def test_the_shipped_catalog_loads(catalog):
    assert {c.name for c in catalog.components} == {"gateway", "policy", "core", "office"}
    assert "Watchdog" in {a.name for a in catalog.alerts}
    assert catalog.sli_windows() == ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@pytest.mark.parametrize("old,new,expected,on_line", BROKEN)
def test_a_broken_catalog_names_file_line_and_path(catalog_text, old, new, expected, on_line):
    assert old in catalog_text
    broken = catalog_text.replace(old, new, 1)
    with pytest.raises(catalog_mod.CatalogError) as info:
        catalog_mod.loads(broken, "stack.yaml")
    first = str(info.value.problems[0])
    _, line, message = first.split(":", 2)
    assert message.strip().startswith(expected) or expected in message, first
    assert 1 <= int(line) <= len(broken.splitlines())
    assert on_line in broken.splitlines()[int(line) - 1], f"{first} names line {line}: {broken.splitlines()[int(line) - 1]!r}"


@pytest.mark.parametrize("old,new,expected", [
    pytest.param("threshold_seconds: 0.5", "threshold_seconds: 0.4", "slos[5].threshold_seconds:", id="a threshold off the grid"),
    pytest.param("err: BACKPRESSURE}", "err: BACKPRESURE}", "alerts[4].errors.err:", id="a label value typo"),
    pytest.param("{severity: page, factor: 14.4, long: 1h, short: 5m, for: 2m}",
                 "{severity: page, factor: 14.4, long: 5m, short: 1h, for: 2m}", "burn_rate_tiers[0].short:",
                 id="a tier with its windows swapped"),
])
def test_the_cli_exits_2_with_one_line_per_problem(tmp_path, catalog_text, old, new, expected):
    bad = tmp_path / "stack.yaml"
    bad.write_text(catalog_text.replace(old, new, 1))
    proc = subprocess.run([sys.executable, "-c", "from vigia.cli import run; run()", "render",
                           "--catalog", str(bad), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    line = catalog_text.replace(old, new, 1).splitlines().index(next(
        text for text in catalog_text.replace(old, new, 1).splitlines() if new.splitlines()[0].strip() in text)) + 1
    assert lines[0].startswith(f"{bad}:{line}: {expected}"), lines[0]


def test_tier_windows_are_recorded_whatever_they_are(catalog_text):
    """A tier over 7m and 40m records its own SLI ratios: no window list is fixed in code."""
    text = catalog_text.replace("{severity: page, factor: 14.4, long: 1h, short: 5m, for: 2m}",
                                "{severity: page, factor: 14.4, long: 40m, short: 7m, for: 2m}", 1)
    model = catalog_mod.loads(text)
    assert model.sli_windows() == ("7m", "30m", "40m", "2h", "6h", "1d", "3d")
