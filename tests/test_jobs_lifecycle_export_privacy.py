"""Gold hourly rows, retention, and the auditor's bundle (the privacy release: tests/test_privacy.py)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from datetime import date, timedelta
from pathlib import Path

import clickhouse_connect
import pytest

from jobs import lifecycle
from jobs.store import LocalStore
from jobs.verify import verify
from tests.spool import write_spool
from tests.test_rollup import D1, D2, cli, trusted

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from vigia.catalog import load
    catalog = load(ROOT / "stack.yaml")
    tmp = tmp_path_factory.mktemp("jobs")
    write_spool(catalog, tmp / "spool", [2, 1], per_day=70)
    dsn = f"chdb://{tmp / 'ch'}"
    result = cli("rollup", "--spool", str(tmp / "spool"), "--store", f"file://{tmp / 'store'}", "--clickhouse", dsn,
                 "--key-file", str(tmp / "key"))
    assert result.returncode == 0, result.stderr
    return {"store": LocalStore(tmp / "store"), "dsn": dsn, "tmp": tmp, "catalog": catalog}


def test_gold_hourly_rows_match_the_silver_logs(shipped):
    client = clickhouse_connect.get_client(dsn=shipped["dsn"])
    gold = client.query("SELECT sum(lines), sum(requests), sum(errors), sum(errors) / sum(requests), max(p99_ms), "
                        "groupUniqArray((component, route, method, tool, err_token)) FROM vigia.logs_hourly "
                        "WHERE toDate(hour) = %(d)s", parameters={"d": D1}).result_rows[0]
    # write_spool: 70 lines, every 10th a 500 (7 errors), latencies 5..44 ms. Its sampler kept every
    # success, but gold weights a line by the catalog's rates: a success stands for 1 / success rate requests.
    sampling = shipped["catalog"].logs.sampling
    requests = 63 / sampling.success + 7 / sampling.error
    assert gold[0] == 70 and gold[1] == pytest.approx(requests) and gold[2] == pytest.approx(7 / sampling.error)
    assert gold[3] == pytest.approx(7 / sampling.error / requests) and 40 <= gold[4] <= 44
    assert gold[5] == [("gateway", "/v1/items", "GET", "", "")]
    trails = client.query("SELECT kind, sum(records) FROM vigia.trails_hourly WHERE toDate(hour) = %(d)s GROUP BY kind",
                          parameters={"d": D1}).result_rows
    assert trails == [("office.tool_call", 70)]


def test_the_audit_bundle_verifies_offline_and_a_tampered_one_does_not(shipped, tmp_path):
    out = tmp_path / "bundle.tar.gz"
    made = cli("export-audit", "--store", f"file://{shipped['store'].root}", "--from", D2, "--to", D2, "--out", str(out))
    assert made.returncode == 0, made.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "bundle.json" in names and any(n.startswith("keys/rollup-") for n in names)
    assert not any(n.endswith(".zst") and D1.replace("-", "/") in n for n in names)
    ok = cli("verify", "--bundle", str(out), "--key-file", str(shipped["tmp"] / "key"))
    assert ok.returncode == 0 and "audit objects: 1/1 valid" in ok.stdout and "audit checkpoints: 1/1 valid" in ok.stdout, ok.stderr
    assert not any(line.startswith("logs ") for line in ok.stdout.splitlines())  # a bundle holds trails only
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(out) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".zst"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            member.size = len(data)
            import io
            dst.addfile(member, io.BytesIO(data))
    bad = cli("verify", "--bundle", str(tampered), "--key-file", str(shipped["tmp"] / "key"))
    assert bad.returncode == 1 and "modified" in bad.stderr


def test_lifecycle_expires_old_days_and_the_remaining_chain_still_verifies(catalog, shipped, tmp_path):
    import shutil
    copy = LocalStore(tmp_path / "store")
    shutil.copytree(shipped["store"].root, copy.root)
    pretend_today = date.fromisoformat(D2) + timedelta(days=catalog.retention.logs_days)
    quarantined = f"quarantine/logs/{D1.replace('-', '/')}/quarantine.ndjson"
    copy.put(quarantined, b"{}\n")
    removed = lifecycle.enforce(copy, catalog, pretend_today)
    assert removed and all(f"/{D1.replace('-', '/')}/" in k for k in removed if k.startswith("logs/"))
    assert quarantined in removed and copy.exists("state/audit.json")
    assert copy.list(f"logs/{D2.replace('-', '/')}/")
    report = verify(copy, catalog, D2, D2, trusted(shipped["tmp"] / "key"), today=pretend_today)
    assert report.ok, report.findings
