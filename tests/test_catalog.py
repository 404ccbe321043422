"""A wrong catalog fails with one line naming file, line and path; the real one loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vigia import catalog as catalog_mod

BROKEN = [
    pytest.param("objective: 99.7", "objective: 120", "slos[0].objective: must be < 100", id="an objective of 120 % is refused"),
    pytest.param("metric: core_rate_limit_hits_total\n    by", "metric: core_nope_total\n    by",
                 "alerts[5].metric: unknown metric 'core_nope_total'", id="an alert on an unknown metric is refused"),
    pytest.param("threshold_seconds: 0.5", "threshold_seconds: 0.4",
                 "slos[5].threshold_seconds: 0.4 is not a bucket boundary", id="an SLO threshold off the bucket grid is refused"),
    pytest.param("errors: {code: \"5..\"}\n  - name: gateway-latency", "errors: {status: \"5..\"}\n  - name: gateway-latency",
                 "slos[0].errors.status: gateway_http_requests_total has no label 'status'", id="an SLO on an undefined label is refused"),
    pytest.param("  max_value_length: 128", "  max_value_length: 128\n  colour: blue",
                 "logs.colour: unknown key", id="an unknown key is refused"),
    pytest.param("project: vigia", "project: [vigia", "invalid YAML", id="bad YAML is refused"),
    pytest.param("{name: gateway_jwks_refresh_total,", "{name: gateway_jwks_refresh,",
                 "counter names end in _total", id="a counter without _total is refused"),
]


def test_the_shipped_catalog_loads(catalog):
    assert {c.name for c in catalog.components} == {"gateway", "policy", "core", "office"}
    assert "Watchdog" in {a.name for a in catalog.alerts}


@pytest.mark.parametrize("old,new,expected", BROKEN)
def test_a_broken_catalog_names_file_line_and_path(catalog_text, old, new, expected):
    assert old in catalog_text
    with pytest.raises(catalog_mod.CatalogError) as info:
        catalog_mod.loads(catalog_text.replace(old, new, 1), "stack.yaml")
    first = str(info.value.problems[0])
    assert expected in first
    line = int(first.split(":")[1])
    assert line >= 1
    changed_line = catalog_text.replace(old, new, 1).splitlines()[line - 1]
    # the named line is the one that was broken (or, for a missing/unknown key, its neighbour)
    assert any(part.strip() and part.strip() in changed_line for part in new.splitlines()) or "YAML" in expected


def test_the_cli_exits_2_with_one_line_per_problem(tmp_path, catalog_text):
    bad = tmp_path / "stack.yaml"
    bad.write_text(catalog_text.replace("threshold_seconds: 0.5", "threshold_seconds: 0.4", 1))
    proc = subprocess.run([sys.executable, "-c", "from vigia.cli import run; run()", "render",
                           "--catalog", str(bad), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    line = catalog_text.splitlines().index("    threshold_seconds: 0.5") + 1
    assert lines[0].startswith(f"{bad}:{line}: slos[5].threshold_seconds:")
