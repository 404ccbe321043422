"""The rollup against real S3 (moto's server over HTTP, with real HTTP faults in front of it) and chDB:
exactly-once after crashes and S3 errors, nothing lost around midnight, late and rotated files,
redacted quarantine, lifecycle, and the Merkle log that survives expiry."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import boto3
import clickhouse_connect
import pytest
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer

from jobs import lifecycle, merkle, rollup
from jobs import manifest as mf
from jobs.store import LocalStore, S3Store, StoreError
from jobs.verify import inclusion, verify
from tests.helpers import free_port
from tests.spool import DAY, write_spool

ROOT = Path(__file__).resolve().parent.parent
TODAY = datetime.now(timezone.utc).date()
D1, D2 = (TODAY - timedelta(days=2)).isoformat(), (TODAY - timedelta(days=1)).isoformat()


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-c", "from vigia.cli import run; run()", *args, "--catalog", str(ROOT / "stack.yaml")],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def rows(dsn: str, sql: str) -> int:
    return clickhouse_connect.get_client(dsn=dsn).query(sql).result_rows[0][0]


def trusted(key_file: Path) -> dict[str, bytes]:
    return {kid: raw for kid, (raw, _) in mf.trusted_keys([], key_file).items()}


def day_end(day: str) -> float:
    return datetime.fromisoformat(day + "T00:00:00+00:00").timestamp() + DAY


def folder(kind: str, day: str) -> str:
    return mf.day_prefix(kind, day)


class FaultProxy:
    """A real HTTP hop in front of moto's server. Requests pass through unchanged; an armed fault
    (method, path fragment, status) answers every matching request with the S3 error an outage gives."""

    def __init__(self, upstream: str):
        target = urlparse(upstream)
        self.faults: list[tuple[str, str, int]] = []
        self.hits = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def relay(self):
                if self.headers.get("Transfer-Encoding") == "chunked":
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size + 2)[:-2]
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if any(method == self.command and part in self.path for method, part, _ in proxy.faults):
                    status = next(s for m, p, s in proxy.faults if m == self.command and p in self.path)
                    proxy.hits += 1
                    error = b"" if self.command == "HEAD" else b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                answer = upstream_conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream_conn.close()

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, config=Config(retries={"max_attempts": 1}))


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
    proxy = FaultProxy(env["AWS_ENDPOINT_URL"])
    client.proxy = proxy
    yield client
    proxy.server.shutdown()
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
    assert summary["manifests"] == 4 and summary["ignored"] == 2  # the trail writer's .head sidecars
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vigia", Prefix="prod/")["Contents"]]
    assert f"prod/{folder('logs', D1)}/gateway-n1-0000.ndjson.zst" in keys
    assert f"prod/{folder('audit', D2)}/manifest-000002.json" in keys
    assert f"prod/{folder('audit', D2)}/checkpoint-000002.json" in keys
    assert "prod/state/audit.json" in keys
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 80
    assert rows(dsn, "SELECT count() FROM vigia.trails") == 80
    assert rows(dsn, "SELECT count() FROM vigia.logs_hourly") > 0
    assert (tmp_path / "key.pub").exists()
    # Run again with the same files back in the spool: nothing is added anywhere.
    for path in (tmp_path / "spool" / "archive").rglob("*.ndjson"):
        target = tmp_path / "spool" / path.relative_to(tmp_path / "spool" / "archive")
        path.rename(target)
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["rollup"]["manifests"] == 0
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 80
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="vigia", Prefix="prod/")["Contents"]) == sorted(keys)
    checked = cli("verify", "--store", "s3://vigia/prod", "--date", D1, "--to", D2, "--clickhouse", dsn,
                  "--public-key", str(tmp_path / "key.pub"))
    assert checked.returncode == 0, checked.stderr
    for line in ("logs manifests: 2/2 valid", "logs objects: 2/2 valid", "audit checkpoints: 2/2 valid",
                 "logs clickhouse: 2/2 valid", "audit SHA256SUMS: 2/2 valid"):
        assert line in checked.stdout
    assert "trusted key" in checked.stdout and "6 signatures verified" in checked.stdout


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


def test_s3_exists_is_false_only_when_s3_says_404(s3):
    store = S3Store("vigia", "exists", client=s3.proxy.client())
    assert store.exists("a.txt") is False
    store.put("a.txt", b"x")
    assert store.exists("a.txt") is True
    s3.proxy.faults = [("HEAD", "/exists/", 503)]
    try:
        with pytest.raises(StoreError, match="a.txt"):
            store.exists("a.txt")
        with pytest.raises(StoreError, match="b.txt"):
            store.exists("b.txt")  # an outage is not "absent"
    finally:
        s3.proxy.faults = []


@pytest.mark.parametrize("fault", [("PUT", "/manifest-", 503), ("PUT", "office-n1-0000", 500),
                                   ("HEAD", "/state/", 503), ("GET", "/state/", 503)],
                         ids=["manifest PUT fails", "trail object PUT fails", "read-back HEAD fails", "state GET fails"])
def test_real_s3_errors_mid_run_then_a_rerun_is_exactly_once(catalog, tmp_path, s3, fault):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=20)
    store = S3Store("vigia", tmp_path.name, client=s3.proxy.client())
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    key = mf.load_or_create_key(tmp_path / "key")
    s3.proxy.faults, s3.proxy.hits = [fault], 0
    try:
        with pytest.raises(StoreError):
            rollup.run(catalog, tmp_path / "spool", store, client, key)
        assert s3.proxy.hits >= 1
    finally:
        s3.proxy.faults = []
    rollup.run(catalog, tmp_path / "spool", store, client, key)
    assert client.query("SELECT count(), uniqExact(_file, _line) FROM vigia.logs").result_rows[0] == (40, 40)
    assert client.query("SELECT count() FROM vigia.trails").result_rows[0][0] == 40
    report = verify(store, catalog, D1, D2, trusted(tmp_path / "key"), client)
    assert report.ok, report.findings


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
    assert len([k for k in store.list() if k.endswith(".zst")]) == 4
    assert len([k for k in store.list() if k.endswith(".json") and "/manifest-" in k]) == 4
    assert verify(store, catalog, D1, D2, trusted(tmp_path / "key"), clickhouse_connect.get_client(dsn=dsn)).ok


@pytest.mark.parametrize("step", ["object", "manifest", "archive"])
def test_a_hard_kill_against_s3_then_a_rerun_leaves_every_line_exactly_once(catalog, tmp_path, s3, step):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=15)
    dsn = f"chdb://{tmp_path / 'ch'}"
    args = ("rollup", "--spool", str(tmp_path / "spool"), "--store", f"s3://vigia/{tmp_path.name}", "--clickhouse", dsn,
            "--key-file", str(tmp_path / "key"))
    assert cli(*args, env=dict(os.environ, VIGIA_FAULT=f"after:{step}")).returncode == 137
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 30 and rows(dsn, "SELECT count() FROM vigia.trails") == 30
    store = S3Store("vigia", tmp_path.name)
    assert len([k for k in store.list() if k.endswith(".zst")]) == 4
    report = verify(store, catalog, D1, D2, trusted(tmp_path / "key"), clickhouse_connect.get_client(dsn=dsn))
    assert report.ok, report.findings


def test_malformed_lines_are_quarantined_redacted_and_the_rest_loaded(catalog, tmp_path):
    spool = tmp_path / "spool"
    write_spool(catalog, spool, [1], per_day=20)
    [path] = list(spool.rglob("logs/**/*.ndjson"))
    bad = [b'{"ts":"2026-01-01T00:00:00.000Z","component":"gateway","payload":"secret-value"}',
           b"not json at all, alice@example.com",
           b'{"ts":"2026-01-01T00:00:00.000Z","component":"gateway","code":"two hundred"}']
    with path.open("ab") as handle:
        handle.write(b"\n".join(bad) + b"\n")
    dsn = f"chdb://{tmp_path / 'ch'}"
    result = cli("rollup", "--spool", str(spool), "--store", f"file://{tmp_path / 'store'}", "--clickhouse", dsn,
                 "--key-file", str(tmp_path / "key"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["rollup"]["quarantined"] == 3
    assert rows(dsn, "SELECT count() FROM vigia.logs") == 20
    client = clickhouse_connect.get_client(dsn=dsn)
    store = LocalStore(tmp_path / "store")
    blob = store.get(f"quarantine/{folder('logs', D2)}/quarantine.ndjson")
    assert b"secret-value" not in blob and b"alice" not in blob and b"two hundred" not in blob
    entries = [json.loads(line) for line in blob.splitlines()]
    assert [e["line"] for e in entries] == [21, 22, 23]
    assert entries[0]["keys"] == ["ts", "component", "payload"] and entries[1]["keys"] == []
    assert [e["sha256"] for e in entries] == [hashlib.sha256(line).hexdigest() for line in bad]
    assert all(e["object"] == f"{folder('logs', D2)}/gateway-n1-0000.ndjson.zst" and e["reason"] for e in entries)
    assert verify(store, catalog, D2, D2, trusted(tmp_path / "key"), client).ok


def test_lines_written_just_before_midnight_are_never_lost(catalog, tmp_path, monkeypatch):
    """A file is closed only GRACE seconds after its day; one that grows after it was shipped stays
    in the spool and its rest ships as a later part of the same file, in a supplementary manifest."""
    spool, store = tmp_path / "spool", LocalStore(tmp_path / "store")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    key = mf.load_or_create_key(tmp_path / "key")
    write_spool(catalog, spool, [1], per_day=10)
    [path] = list(spool.rglob("logs/**/*.ndjson"))
    line = path.read_bytes().splitlines()[0] + b"\n"
    early = rollup.run(catalog, spool, store, client, key, now=day_end(D2) + 30)  # the logger may still flush
    assert early.files == 0 and path.exists()
    with path.open("ab") as handle:
        handle.write(line)  # its last second of records lands now
    shipped = path.stat().st_size

    def late_flush(step):
        if step == "manifest" and path.stat().st_size == shipped:
            with path.open("ab") as handle:
                handle.write(line)  # and one more while the rollup runs

    monkeypatch.setattr(rollup, "fault", late_flush)
    summary = rollup.run(catalog, spool, store, client, key, now=day_end(D2) + rollup.GRACE + 1)
    assert summary.lines == 11 + 10 and path.exists() and summary.left[0].startswith("logs/")
    monkeypatch.setattr(rollup, "fault", lambda step: None)
    summary = rollup.run(catalog, spool, store, client, key, now=day_end(D2) + rollup.GRACE + 60)
    assert summary.files == 1 and summary.lines == 1 and not path.exists()
    assert store.exists(f"{folder('logs', D2)}/gateway-n1-0000-at{shipped}.ndjson.zst")
    assert client.query("SELECT count() FROM vigia.logs").result_rows[0][0] == 12
    report = verify(store, catalog, D2, D2, trusted(tmp_path / "key"), client, today=TODAY)
    assert report.ok, report.findings


def test_a_late_file_gets_a_supplementary_manifest_and_signed_manifests_are_never_rewritten(catalog, tmp_path):
    spool, store = tmp_path / "spool", LocalStore(tmp_path / "store")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    key = mf.load_or_create_key(tmp_path / "key")
    write_spool(catalog, spool, [2, 1], per_day=10)
    rollup.run(catalog, spool, store, client, key)
    before = {k: store.get(k) for k in store.list() if "/manifest-" in k or "/checkpoint-" in k}
    write_spool(catalog, spool, [2], per_day=5, node="n2")  # another node's file for D1, after D2 shipped
    summary = rollup.run(catalog, spool, store, client, key)
    assert summary.manifests == 2 and summary.days == [f"logs {D1}", f"audit {D1}"]
    assert all(store.get(k) == blob for k, blob in before.items())
    late = json.loads(store.get(f"{folder('audit', D1)}/manifest-000003.json"))
    assert late["previous"]["key"] == f"{folder('audit', D2)}/manifest-000002.json"
    assert [o["key"].rsplit("/", 1)[1] for o in late["objects"]] == ["office-n2-0000.ndjson.zst"]
    assert client.query("SELECT count() FROM vigia.trails").result_rows[0][0] == 25
    report = verify(store, catalog, D1, D2, trusted(tmp_path / "key"), client)
    assert report.ok, report.findings
    assert report.counts["audit manifests"] == [3, 3] and report.counts["audit checkpoints"] == [3, 3]
    record = json.loads(rollup.decompress(store.get(late["objects"][0]["key"]), ".zst").splitlines()[2])
    proof = inclusion(store, catalog, record["id"], trusted(tmp_path / "key"))
    assert proof["verified"] and proof["checkpoint_signed"] and proof["leaf_index"] == 20 + 2 and proof["tree_size"] == 25


def test_rotated_files_ship_today_open_ones_only_as_snapshots_and_strays_are_reported(catalog, tmp_path):
    spool, store = tmp_path / "spool", LocalStore(tmp_path / "store")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    key = mf.load_or_create_key(tmp_path / "key")
    write_spool(catalog, spool, [0], per_day=10)
    [live] = list(spool.rglob("logs/**/*.ndjson"))
    rotated = live.with_name(live.name + ".1")
    live.rename(rotated)
    os.utime(rotated, (rotated.stat().st_mtime - 600, rotated.stat().st_mtime - 600))
    live.write_bytes(rotated.read_bytes().splitlines(keepends=True)[0] * 3)
    (live.parent / "notes.txt").write_text("stray")
    summary = rollup.run(catalog, spool, store, client, key)
    today_folder = folder("logs", TODAY.isoformat())
    assert summary.lines == 10 and store.exists(f"{today_folder}/gateway-n1-0000-r1.ndjson.zst")
    assert not rotated.exists() and live.exists()
    assert f"logs/{TODAY.isoformat().replace('-', '/')}/notes.txt" in summary.ignored
    snapshot = rollup.run(catalog, spool, store, client, key, include_today=True)
    assert snapshot.lines == 3 + 10 and live.exists()  # the open files, as snapshots, left in place
    assert store.exists(f"{today_folder}/gateway-n1-0000.ndjson.zst")
    assert client.query("SELECT count() FROM vigia.logs").result_rows[0][0] == 13
    live.open("ab").write(live.read_bytes().splitlines(keepends=True)[0])
    assert rollup.run(catalog, spool, store, client, key, include_today=True).lines == 1  # only what is new
    report = verify(store, catalog, TODAY.isoformat(), TODAY.isoformat(), trusted(tmp_path / "key"), client)
    assert report.ok, report.findings


def test_lifecycle_then_rollup_continues_the_chain_and_the_merkle_log(catalog, tmp_path):
    spool, store = tmp_path / "spool", LocalStore(tmp_path / "store")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    key = mf.load_or_create_key(tmp_path / "key")
    old = (TODAY - timedelta(days=10)).isoformat()
    write_spool(catalog, spool, [10, 2], per_day=8)
    summary = rollup.run(catalog, spool, store, client, key, audit_days=7)  # ships, then expires the old audit day
    assert summary.expired > 0 and not store.list(f"audit/{old.replace('-', '/')}/")
    assert json.loads(store.get("state/audit.json"))["log"]["size"] == 16
    write_spool(catalog, spool, [1], per_day=8)  # late for D2, which the first run sealed empty
    rollup.run(catalog, spool, store, client, key, audit_days=7)
    latest = max(k for k in store.list(f"{folder('audit', D2)}/") if "/checkpoint-" in k)
    checkpoint = json.loads(store.get(latest))
    assert checkpoint["size"] == 24 and checkpoint["base"]["size"] == 16
    report = verify(store, catalog, old, D2, trusted(tmp_path / "key"), client, audit_days=7)
    assert report.ok, report.findings
    record = json.loads(rollup.decompress(store.get(f"{folder('audit', D2)}/office-n1-0000.ndjson.zst"), ".zst").splitlines()[5])
    proof = inclusion(store, catalog, record["id"], trusted(tmp_path / "key"))
    assert proof["verified"] and proof["leaf_index"] == 16 + 5


def test_gzip_objects_verify_and_check_offline_with_sha256sum(catalog, tmp_path):
    write_spool(catalog, tmp_path / "spool", [1], per_day=10)
    result = cli("rollup", "--spool", str(tmp_path / "spool"), "--store", f"file://{tmp_path / 'store'}",
                 "--clickhouse", f"chdb://{tmp_path / 'ch'}", "--key-file", str(tmp_path / "key"), "--compression", "gzip")
    assert result.returncode == 0, result.stderr
    day = tmp_path / "store" / "logs" / D2.replace("-", "/")
    assert (day / "gateway-n1-0000.ndjson.gz").exists()
    proc = subprocess.run(["sha256sum", "-c", mf.SUMS], cwd=day, capture_output=True, text=True)
    assert proc.returncode == 0 and "OK" in proc.stdout
    checked = cli("verify", "--store", f"file://{tmp_path / 'store'}", "--date", D2, "--key-file", str(tmp_path / "key"))
    assert checked.returncode == 0, checked.stderr


def test_retention_is_one_policy_for_the_store_minio_and_quarantine(catalog):
    from infra.minio import lifecycle as minio_rules

    days = lifecycle.retention_days(catalog)
    assert days["audit"] == days["quarantine/audit"] == catalog.retention.audit_days.default
    assert days["logs"] == days["quarantine/logs"] == catalog.retention.logs_days
    rules = {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in minio_rules(catalog)["Rules"]}
    assert rules == {f"{prefix}/": n for prefix, n in days.items()}
    assert lifecycle.retention_days(catalog, catalog.retention.audit_days.max)["quarantine/audit"] == catalog.retention.audit_days.max
    with pytest.raises(ValueError, match="audit retention"):
        catalog.retention.audit_days.policy(catalog.retention.audit_days.min - 1)
    today = date(2026, 11, 21)
    assert lifecycle.expired(catalog, "quarantine/logs", (today - timedelta(days=days["logs"] + 1)).isoformat(), today)
    assert not lifecycle.expired(catalog, "quarantine/logs", (today - timedelta(days=days["logs"])).isoformat(), today)


def test_a_bad_audit_retention_is_refused_by_the_cli(tmp_path):
    result = cli("lifecycle", "--store", f"file://{tmp_path}", "--audit-days", "5")
    assert result.returncode == 2
    assert result.stderr == "error: Invalid value for --audit-days: audit retention must be 7..90 days (retention.audit_days), not 5\n"


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_merkle_proofs_from_a_frontier_verify_and_tampering_fails(n, data):
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    tree_root = merkle.root(leaves)
    m = data.draw(st.integers(0, n))
    old = merkle.Tree(0, [], leaves[:m])
    tree = merkle.Tree(m, old.frontier(), leaves[m:])  # only the frontier stands for the first m leaves
    assert tree.root() == tree_root and tree.frontier() == merkle.Tree(0, [], leaves).frontier()
    if m < n:
        i = data.draw(st.integers(m, n - 1))
        proof = tree.inclusion_proof(i)
        assert merkle.verify_inclusion(i, n, leaves[i], proof, tree_root)
        assert not merkle.verify_inclusion(i, n, merkle.leaf_hash(b"forged"), proof, tree_root)
    proof = tree.consistency_proof()
    assert merkle.verify_consistency(m, n, old.root(), tree_root, proof)
    if 0 < m < n:
        assert not merkle.verify_consistency(m, n, merkle.leaf_hash(b"other"), tree_root, proof)


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
