"""The rollup against real S3 (moto's server over HTTP) and chDB: exactly-once after crashes,
quarantine of bad lines, and `vigia verify` naming every kind of tampering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import clickhouse_connect
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer

from jobs import manifest as mf
from jobs import merkle, rollup
from jobs.store import LocalStore, S3Store, StoreError
from jobs.verify import inclusion, verify
from tests.helpers import free_port
from tests.spool import write_spool

ROOT = Path(__file__).resolve().parent.parent
TODAY = datetime.now(timezone.utc).date()
D1, D2 = (TODAY - timedelta(days=2)).isoformat(), (TODAY - timedelta(days=1)).isoformat()


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-c", "from vigia.cli import run; run()", *args, "--catalog", str(ROOT / "stack.yaml")],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def rows(dsn: str, sql: str) -> int:
    return clickhouse_connect.get_client(dsn=dsn).query(sql).result_rows[0][0]


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="vigia")
    yield client
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def test_a_rollup_to_s3_is_verified_loaded_once_and_rerun_idempotent(catalog, tmp_path, s3):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=40)
    dsn = f"chdb://{tmp_path / 'ch'}"
    args = ("rollup", "--spool", str(tmp_path / "spool"), "--store", "s3://vigia/prod", "--clickhouse", dsn,
            "--key-file", str(tmp_path / "key"))
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])["rollup"]
    assert summary["files"] == 4 and summary["lines"] == 160 and summary["quarantined"] == 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vigia", Prefix="prod/")["Contents"]]
    assert f"prod/logs/{D1.replace('-', '/')}/gateway-n1-0000.ndjson.zst" in keys
    assert f"prod/audit/{D2.replace('-', '/')}/manifest.json" in keys
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 80
    assert rows(dsn, "SELECT count() FROM vigia.trails") == 80
    assert rows(dsn, "SELECT count() FROM vigia.logs_hourly") > 0
    # Run again with the same files back in the spool: nothing is added anywhere.
    for path in (tmp_path / "spool" / "archive").rglob("*.ndjson"):
        target = tmp_path / "spool" / path.relative_to(tmp_path / "spool" / "archive")
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    assert cli(*args).returncode == 0
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 80
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="vigia", Prefix="prod/")["Contents"]) == sorted(keys)
    checked = cli("verify", "--store", "s3://vigia/prod", "--date", D1, "--to", D2, "--clickhouse", dsn)
    assert checked.returncode == 0, checked.stderr
    assert "logs: 2/2 valid" in checked.stdout and "audit: 2/2 valid" in checked.stdout


def test_an_s3_upload_whose_checksum_differs_is_refused(s3):
    store = S3Store("vigia", "checks")
    store.put("a/b.txt", b"hello")
    original = store.client.head_object

    def lying_head(**kw):
        head = original(**kw)
        head["Metadata"] = {"sha256": "0" * 64}
        return head

    store.client.head_object = lying_head
    with pytest.raises(StoreError):
        store.put("a/c.txt", b"hello")


@pytest.mark.parametrize("step", ["object", "manifest", "clickhouse-object", "clickhouse-replaced", "archive"])
def test_a_hard_kill_at_any_step_then_a_rerun_leaves_every_line_exactly_once(catalog, tmp_path, step):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=30)
    dsn = f"chdb://{tmp_path / 'ch'}"
    args = ("rollup", "--spool", str(tmp_path / "spool"), "--store", f"file://{tmp_path / 'store'}", "--clickhouse", dsn,
            "--key-file", str(tmp_path / "key"))
    killed = cli(*args, env=dict(os.environ, VIGIA_FAULT=f"after:{step}"))
    assert killed.returncode == 137
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 60
    assert rows(dsn, "SELECT count() FROM vigia.trails") == 60
    assert rows(dsn, "SELECT count() - uniqExact(_file, _line) FROM vigia.logs") == 0
    assert not list((tmp_path / "spool" / "logs").rglob("*.ndjson"))
    store = LocalStore(tmp_path / "store")
    objects = [k for k in store.list() if k.endswith(".zst")]
    assert len(objects) == 4
    assert verify(store, catalog, D1, D2, clickhouse_connect.get_client(dsn=dsn)).ok


def test_malformed_lines_are_quarantined_counted_and_the_rest_loaded(catalog, tmp_path):
    spool = tmp_path / "spool"
    write_spool(catalog, spool, [1], per_day=20)
    [path] = list(spool.rglob("logs/**/*.ndjson"))
    with path.open("ab") as handle:
        handle.write(b'{"ts":"2026-01-01T00:00:00.000Z","component":"gateway","payload":"secret"}\n')
        handle.write(b"not json at all\n")
        handle.write(b'{"ts":"2026-01-01T00:00:00.000Z","component":"gateway","code":"two hundred"}\n')
    dsn = f"chdb://{tmp_path / 'ch'}"
    result = cli("rollup", "--spool", str(spool), "--store", f"file://{tmp_path / 'store'}", "--clickhouse", dsn,
                 "--key-file", str(tmp_path / "key"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["rollup"]["quarantined"] == 3
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 20
    client = clickhouse_connect.get_client(dsn=dsn)
    reasons = [r[0] for r in client.query("SELECT reason FROM vigia.quarantine ORDER BY line").result_rows]
    assert reasons == ["field 'payload' is not in the catalog", "not JSON", "field 'code': type"]
    assert (tmp_path / "store" / "quarantine" / "logs").exists()
    assert verify(LocalStore(tmp_path / "store"), catalog, D2, D2, client).ok


@pytest.fixture()
def shipped(catalog, tmp_path):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=25)
    dsn = f"chdb://{tmp_path / 'ch'}"
    result = cli("rollup", "--spool", str(tmp_path / "spool"), "--store", f"file://{tmp_path / 'store'}",
                 "--clickhouse", dsn, "--key-file", str(tmp_path / "key"))
    assert result.returncode == 0, result.stderr
    return LocalStore(tmp_path / "store")


def _obj(kind: str, day: str) -> str:
    return f"{kind}/{day.replace('-', '/')}/{'gateway' if kind == 'logs' else 'office'}-n1-0000.ndjson.zst"


def _rewrite(store, key, fn):
    data = rollup.decompress(store.get(key), key)
    store.put(key, rollup.compress(fn(data), "zstd")[0])


@pytest.mark.parametrize("tamper,finding", [
    pytest.param(lambda s: _rewrite(s, _obj("logs", D1), lambda d: d.replace(b'"code":200', b'"code":201', 1)),
                 f"{_obj('logs', D1)}: modified", id="a modified object is named"),
    pytest.param(lambda s: s.delete(_obj("logs", D2)), f"{_obj('logs', D2)}: deleted", id="a deleted object is named"),
    pytest.param(lambda s: (s.put(_obj("logs", D2).replace("gateway-n1", "moved"), s.get(_obj("logs", D2))), s.delete(_obj("logs", D2))),
                 f"{_obj('logs', D2)}: moved to", id="a moved object is named"),
    pytest.param(lambda s: _rewrite(s, _obj("audit", D1), lambda d: b"\n".join(reversed(d.splitlines())) + b"\n"),
                 f"{_obj('audit', D1)}: modified", id="reordered records are named"),
    pytest.param(lambda s: s.put(f"logs/{D2.replace('-', '/')}/extra.ndjson.zst", b"x"),
                 "extra.ndjson.zst: in the store but listed by no manifest", id="an unlisted object is named"),
    pytest.param(lambda s: s.put(f"logs/{D2.replace('-', '/')}/manifest.json",
                                 s.get(f"logs/{D2.replace('-', '/')}/manifest.json").replace(b'"lines":25', b'"lines":24')),
                 "manifest signature invalid", id="an edited manifest fails its signature"),
])
def test_verify_names_each_finding(catalog, shipped, tamper, finding):
    tamper(shipped)
    report = verify(shipped, catalog, D1, D2)
    assert not report.ok
    assert any(finding in f for f in report.findings), report.findings


def test_a_rewritten_audit_history_breaks_the_checkpoint_and_consistency(catalog, shipped):
    key = f"audit/{D1.replace('-', '/')}/manifest.json"
    doc = json.loads(shipped.get(key))
    keep = doc["objects"][0]
    data = rollup.decompress(shipped.get(keep["key"]), keep["key"])[:-1].rsplit(b"\n", 1)[0] + b"\n"  # drop last record
    stored = rollup.compress(data, "zstd")[0]
    shipped.put(keep["key"], stored)
    findings = " ".join(verify(shipped, catalog, D1, D2).findings)
    assert "modified" in findings and "checkpoint" in findings


def test_an_inclusion_proof_for_one_trail_record_verifies(catalog, shipped):
    key = _obj("audit", D2)
    record = json.loads(rollup.decompress(shipped.get(key), key).splitlines()[3])
    proof = inclusion(shipped, catalog, record["id"])
    assert proof["verified"] and proof["checkpoint_signed"]
    assert proof["leaf_index"] == 25 + 3 and proof["tree_size"] == 50


def test_the_verify_cli_prints_counts_and_exits_1_on_a_finding(shipped, tmp_path):
    ok = cli("verify", "--store", f"file://{shipped.root}", "--date", D1, "--to", D2)
    assert ok.returncode == 0 and "logs: 2/2 valid" in ok.stdout
    shipped.delete(_obj("audit", D2))
    bad = cli("verify", "--store", f"file://{shipped.root}", "--date", D1, "--to", D2)
    assert bad.returncode == 1 and "audit: 1/2 valid" in bad.stdout and "deleted" in bad.stderr


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_merkle_inclusion_and_consistency_proofs_verify_and_tampering_fails(n, data):
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    tree_root = merkle.root(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(i, leaves)
    assert merkle.verify_inclusion(i, n, leaves[i], proof, tree_root)
    assert not merkle.verify_inclusion(i, n, merkle.leaf_hash(b"forged"), proof, tree_root)
    m = data.draw(st.integers(1, n))
    cproof = merkle.consistency_proof(m, leaves)
    assert merkle.verify_consistency(m, n, merkle.root(leaves[:m]), tree_root, cproof)
    if m < n:
        assert not merkle.verify_consistency(m, n, merkle.leaf_hash(b"other"), tree_root, cproof)


def test_sha256sums_lets_sha256sum_check_a_downloaded_day_offline(shipped):
    folder = shipped.root / "logs" / D1.replace("-", "/")
    proc = subprocess.run(["sha256sum", "-c", mf.SUMS], cwd=folder, capture_output=True, text=True)
    assert proc.returncode == 0 and "OK" in proc.stdout


class FlakyStore:
    """The real local store, failing its Nth put like an S3 outage would."""

    def __init__(self, store, fail_at: int):
        self.store, self.fail_at, self.puts = store, fail_at, 0

    def put(self, key, data):
        self.puts += 1
        if self.puts == self.fail_at:
            raise StoreError(f"{key}: injected S3 failure")
        self.store.put(key, data)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("fail_at", [2, 4, 7], ids=lambda n: f"an S3 error on put {n} then a rerun loads everything once")
def test_s3_errors_mid_run_then_a_rerun_is_exactly_once(catalog, tmp_path, fail_at):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=20)
    store = LocalStore(tmp_path / "store")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    key = mf.load_or_create_key(tmp_path / "key")
    with pytest.raises(StoreError):
        rollup.run(catalog, tmp_path / "spool", FlakyStore(store, fail_at), client, key)
    rollup.run(catalog, tmp_path / "spool", store, client, key)
    assert client.query("SELECT count(), uniqExact(_file, _line) FROM vigia.logs").result_rows[0] == (40, 40)
    assert verify(store, catalog, D1, D2, client).ok


def test_a_clickhouse_error_mid_load_then_a_rerun_is_exactly_once(catalog, tmp_path, monkeypatch):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=20)
    store = LocalStore(tmp_path / "store")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    key = mf.load_or_create_key(tmp_path / "key")

    def failing(step):
        if step == "clickhouse-replaced":
            client.command("DROP TABLE vigia.logs_staging")  # the engine itself fails the next statements
            raise RuntimeError("injected ClickHouse failure")

    monkeypatch.setattr(rollup, "fault", failing)
    with pytest.raises(RuntimeError):
        rollup.run(catalog, tmp_path / "spool", store, client, key)
    monkeypatch.setattr(rollup, "fault", lambda step: None)
    rollup.run(catalog, tmp_path / "spool", store, client, key)
    assert client.query("SELECT count(), uniqExact(_file, _line) FROM vigia.logs").result_rows[0] == (40, 40)
    assert client.query("SELECT count() FROM vigia.trails").result_rows[0][0] == 40
