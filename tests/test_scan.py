"""The privacy scan finds a planted forbidden field or e-mail, and nothing in a clean spool."""

from __future__ import annotations

from loadtests.scan import scan_all
from tests.spool import write_spool


def test_a_clean_spool_has_no_findings(catalog, tmp_path):
    write_spool(catalog, tmp_path / "spool", [1], per_day=30)
    result = scan_all(catalog, tmp_path)
    assert result["findings"] == [] and result["lines"] == 60 and result["files"] == 2


def test_planted_forbidden_fields_and_leaking_values_are_found(catalog, tmp_path):
    write_spool(catalog, tmp_path / "spool", [1], per_day=5)
    [path] = list((tmp_path / "spool").rglob("logs/**/*.ndjson"))
    with path.open("a") as handle:
        handle.write('{"ts":"2026-11-21T00:00:00.000Z","payload":"hello"}\n')
        handle.write('{"ts":"2026-11-21T00:00:00.000Z","tenant":"alice@example.com"}\n')
        handle.write('{"ts":"2026-11-21T00:00:00.000Z","data":{"nested":{"prompt":"x"}}}\n')
    findings = scan_all(catalog, tmp_path)["findings"]
    assert len(findings) == 3
    assert any("forbidden field 'payload'" in f for f in findings)
    assert any("looks like email" in f for f in findings)
    assert any("forbidden field 'prompt'" in f for f in findings)
