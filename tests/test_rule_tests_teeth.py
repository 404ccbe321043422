"""The generated promtool tests have teeth: break one clause or threshold of a rendered rule and
the case that guards it fails. Each mutation runs only the test group named for it."""

from __future__ import annotations

import re
import subprocess

import pytest

from infra import prometheus
from vigia import conventions as names
from vigia.writer import write_tree


def lines_without(*drop: int):
    """Remove lines by index (negative from the end) from a multi-line expression."""
    def mutate(expr: str) -> str:
        lines = expr.split("\n")
        gone = {i % len(lines) for i in drop}
        return "\n".join(line for i, line in enumerate(lines) if i not in gone)
    return mutate


def replace(old: str, new: str):
    def mutate(expr: str) -> str:
        assert old in expr, f"{old!r} not in {expr!r}"
        return expr.replace(old, new)
    return mutate


def scale_threshold(factor: float):
    """Multiply the burn threshold (the number after `ratio_rateW{...} >`) in both windows."""
    def mutate(expr: str) -> str:
        return re.sub(r"(ratio_rate\w+\{[^}]*\} > )([\d.e-]+)", lambda m: f"{m.group(1)}{float(m.group(2)) * factor:g}", expr)
    return mutate


# Burn-rate expressions are "(\n  long > T\nand\n  short > T\n)\nand\n  events > min_rate".
DROP_SHORT, DROP_LONG, DROP_GUARD = lines_without(2, 3), lines_without(1, 2), lines_without(-2, -1)
FIVE_XX_WITHOUT_5M = lines_without(0, 1, 2, 3, 4, 5)  # "(\n  ratio 5m\n  and\n  guard\n)\nor\n(...)"

MUTATIONS = [
    # (alert, burn tier or None, mutation, test group that must fail)
    pytest.param(names.SLO_BURN_ALERT, "14.4x", DROP_SHORT, "SLO 14.4x burn over 1h and 5m stays quiet once the 5m window has recovered",
                 id="14.4x tier without its short window"),
    pytest.param(names.SLO_BURN_ALERT, "6x", DROP_SHORT, "SLO 6x burn over 6h and 30m stays quiet once the 30m window has recovered",
                 id="6x tier without its short window"),
    pytest.param(names.SLO_BURN_ALERT, "3x", DROP_SHORT, "SLO 3x burn over 1d and 2h stays quiet once the 2h window has recovered",
                 id="3x tier without its short window"),
    pytest.param(names.SLO_BURN_ALERT, "1x", DROP_SHORT, "SLO 1x burn over 3d and 6h stays quiet once the 6h window has recovered",
                 id="1x tier without its short window"),
    pytest.param(names.SLO_BURN_ALERT, "14.4x", DROP_LONG, "SLO 14.4x burn over 1h and 5m stays quiet when only the 5m window burns",
                 id="14.4x tier without its long window"),
    pytest.param(names.SLO_BURN_ALERT, "3x", DROP_LONG, "SLO 3x burn over 1d and 2h stays quiet when only the 2h window burns",
                 id="3x tier without its long window"),
    pytest.param(names.SLO_BURN_ALERT, "1x", DROP_GUARD, "SLO 1x burn over 3d and 6h stays quiet under the low-traffic guard",
                 id="1x tier without its low-traffic guard"),
    pytest.param(names.SLO_BURN_ALERT, "6x", scale_threshold(1.5), "SLO 6x burn over 6h and 30m fires just above the threshold",
                 id="6x tier threshold raised by half"),
    pytest.param(names.SLO_BURN_ALERT, "14.4x", scale_threshold(0.7), "SLO 14.4x burn over 1h and 5m stays quiet just below the threshold",
                 id="14.4x tier threshold lowered"),
    pytest.param("GatewayLatencyP99High", None, lines_without(0, 1), "GatewayLatencyP99High stays quiet once the 5m window has recovered",
                 id="latency alert without its 5m window"),
    pytest.param("GatewayLatencyP99High", None, lines_without(1, 2), "GatewayLatencyP99High stays quiet when only the 5m window is slow",
                 id="latency alert without its 30m window"),
    pytest.param("GatewayLatencyP99High", None, replace("> 0.3)", "> 0.25)"), "GatewayLatencyP99High stays quiet when 0.80%",
                 id="latency threshold lowered to 250 ms"),
    pytest.param("GatewayLatencyP99High", None, replace("histogram_quantile(0.99", "histogram_quantile(0.98"),
                 "GatewayLatencyP99High fires when 1.25%", id="latency quantile lowered to p98"),
    pytest.param("Gateway5xxRateHigh", None, replace("> 0.003", "> 0.005"), "Gateway5xxRateHigh fires at 0.375% bad over 1h",
                 id="5xx 1h threshold raised to 0.5 %"),
    pytest.param("Gateway5xxRateHigh", None, replace("> 0.01\n", "> 0.007\n"), "Gateway5xxRateHigh stays quiet at 0.800% bad over 5m",
                 id="5xx 5m threshold lowered to 0.7 %"),
    pytest.param("Gateway5xxRateHigh", None, FIVE_XX_WITHOUT_5M, "Gateway5xxRateHigh fires at 1.250% bad over 5m",
                 id="5xx alert without its 5m condition"),
    pytest.param("Gateway5xxRateHigh", None, replace("and\n  sum(rate(gateway_http_requests_total{route!~\"/_.*\"}[1h])) > 0.1", ""),
                 "Gateway5xxRateHigh stays quiet at 0.375% bad over 1h under the low-traffic guard", id="5xx 1h condition without its guard"),
    pytest.param("OfficeBackpressureBurn", None, replace("> 0.02", "> 0.015"), "OfficeBackpressureBurn stays quiet at 1.600%",
                 id="backpressure threshold lowered to 1.5 %"),
    pytest.param("JwksRefreshFailing", None, replace(">= 3", ">= 2"), "JwksRefreshFailing stays quiet when gateway_jwks_refresh_consecutive_failures is 2",
                 id="JWKS alert at 2 failures"),
    pytest.param("JwksRefreshFailing", None, replace(">= 3", ">= 4"), "JwksRefreshFailing fires when gateway_jwks_refresh_consecutive_failures is 3",
                 id="JWKS alert at 4 failures"),
    pytest.param("TenantRateLimitSpike", None, lines_without(-2, -1), "TenantRateLimitSpike stays quiet when the jump stays under 0.5/s",
                 id="spike alert without min_rate"),
    pytest.param("TenantRateLimitSpike", None, replace("> 3 *", "> 2 *"), "TenantRateLimitSpike stays quiet when the jump peaks at 2.4x",
                 id="spike factor lowered to 2"),
    pytest.param("TenantRateLimitSpike", None, replace("> 3 *", "> 4 *"), "TenantRateLimitSpike fires when",
                 id="spike factor raised to 4"),
]


@pytest.fixture(scope="module")
def files(catalog):
    return prometheus.render(catalog, "local")


@pytest.mark.parametrize("alert,tier,mutate,guard", MUTATIONS)
def test_a_mutated_rule_fails_the_case_that_guards_it(tmp_path, files, alert, tier, mutate, guard):
    mutated = {path: data for path, data in files.items()}
    groups = []
    for group in files[names.ALERT_RULES]["groups"]:
        rules = []
        for rule in group["rules"]:
            if rule["alert"] == alert and (tier is None or rule["labels"]["burn_tier"] == tier):
                rule = rule | {"expr": mutate(rule["expr"])}
            rules.append(rule)
        groups.append(group | {"rules": rules})
    mutated[names.ALERT_RULES] = {"groups": groups}
    tests = {}
    for path, data in files.items():
        if path.startswith("prometheus/tests/"):
            kept = [t for t in data["tests"] if t["name"].startswith(guard)]
            if kept:
                tests[path] = data | {"tests": kept}
    assert tests, f"no generated test group is named {guard!r}"
    mutated = {p: d for p, d in mutated.items() if not p.startswith("prometheus/tests/")} | tests
    write_tree(tmp_path, mutated)
    # Unmutated, these groups pass (tests/test_render_check.py runs every generated test).
    proc = subprocess.run(["promtool", "test", "rules", *[str(tmp_path / p) for p in sorted(tests)]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, f"promtool still passes with the mutation: {guard}"
    assert guard in proc.stdout + proc.stderr
