"""`vigia verify` names every kind of tampering in one line per finding, trusts only keys given to it,
and proves single trail records from their signed checkpoint."""

from __future__ import annotations

import json
import shutil

import clickhouse_connect
import pytest
from nacl.signing import SigningKey

from jobs import manifest as mf
from jobs import rollup
from jobs.store import LocalStore, sha256_hex
from jobs.verify import verify
from tests.spool import write_spool
from tests.test_rollup import D1, D2, cli, trusted


@pytest.fixture(scope="module")
def pristine(catalog, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    write_spool(catalog, tmp / "spool", [2, 1], per_day=25)
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp / 'ch'}")
    rollup.run(catalog, tmp / "spool", LocalStore(tmp / "store"), client, mf.load_or_create_key(tmp / "key"))
    return tmp


@pytest.fixture()
def shipped(pristine, tmp_path):
    shutil.copytree(pristine / "store", tmp_path / "store")
    return LocalStore(tmp_path / "store")


@pytest.fixture()
def keys(pristine):
    return trusted(pristine / "key")


def obj(kind: str, day: str) -> str:
    return f"{mf.day_prefix(kind, day)}/{'gateway' if kind == 'logs' else 'office'}-n1-0000.ndjson.zst"


def manifest(kind: str, day: str) -> str:
    return mf.manifest_key(kind, day, 1 if day == D1 else 2)


def rewrite(store, key, fn):
    data = rollup.decompress(store.get(key), key)
    store.put(key, rollup.compress(fn(data), "zstd")[0])


def swap(store, a, b):
    first, second = store.get(a), store.get(b)
    store.put(a, second)
    store.put(b, first)


def move(store, key, to):
    store.put(to, store.get(key))
    store.delete(key)


def edit_sums(store):
    key = f"{mf.day_prefix('logs', D1)}/{mf.SUMS}"
    blob = store.get(key)
    store.put(key, (b"1" if blob[:1] == b"0" else b"0") + blob[1:])


def reorigin(store, key_file):
    """A checkpoint of another log, signed with the real key: only the origin check catches it."""
    name = mf.checkpoint_key("audit", D1, 1)
    doc = json.loads(store.get(name))
    doc["origin"] = "someone-else/audit"
    store.put(name, mf.canonical(mf.sign(doc, mf.load_or_create_key(key_file))))


@pytest.mark.parametrize("tamper,finding", [
    pytest.param(lambda s: rewrite(s, obj("logs", D1), lambda d: d.replace(b'"code":200', b'"code":201', 1)),
                 f"{obj('logs', D1)}: modified", id="a modified object"),
    pytest.param(lambda s: s.delete(obj("logs", D2)), f"{obj('logs', D2)}: deleted", id="a deleted object"),
    pytest.param(lambda s: move(s, obj("logs", D2), obj("logs", D2).replace("gateway-n1", "moved")),
                 f"{obj('logs', D2)}: moved to {obj('logs', D2).replace('gateway-n1', 'moved')}", id="a moved object"),
    pytest.param(lambda s: swap(s, obj("logs", D1), obj("logs", D2)),
                 f"{obj('logs', D1)}: reordered: it holds the object listed as {obj('logs', D2)}", id="two swapped objects"),
    pytest.param(lambda s: rewrite(s, obj("audit", D1), lambda d: b"\n".join(reversed(d.splitlines())) + b"\n"),
                 f"{obj('audit', D1)}: modified", id="reordered records"),
    pytest.param(lambda s: s.put(f"{mf.day_prefix('logs', D2)}/extra.ndjson.zst", b"x"),
                 f"{mf.day_prefix('logs', D2)}/extra.ndjson.zst: in the store but listed by no manifest", id="an unlisted object"),
    pytest.param(lambda s: s.put("logs/extra.zst", b"x"), "logs/extra.zst: in the store but listed by no manifest",
                 id="an unlisted object outside the day folders"),
    pytest.param(lambda s: s.put("other/y", b"y"), "other/y: in the store but listed by no manifest",
                 id="an unlisted object outside the prefixes"),
    pytest.param(lambda s: s.put(f"{mf.day_prefix('audit', D1)}/.hidden", b"h"),
                 f"{mf.day_prefix('audit', D1)}/.hidden: in the store but listed by no manifest", id="an unlisted dotfile"),
    pytest.param(lambda s: s.put(manifest("logs", D2), s.get(manifest("logs", D2)).replace(b'"lines":25', b'"lines":24')),
                 f"{manifest('logs', D2)}: signature invalid", id="an edited manifest"),
    pytest.param(lambda s: s.put(manifest("logs", D1), s.get(manifest("logs", D1))[:-20]),
                 f"{manifest('logs', D1)}: not a valid manifest", id="a corrupt manifest"),
    pytest.param(edit_sums, f"{mf.day_prefix('logs', D1)}/{mf.SUMS}: the checksum of gateway-n1-0000.ndjson.zst differs",
                 id="a tampered SHA256SUMS"),
    pytest.param(lambda s: s.delete(f"{mf.day_prefix('audit', D2)}/{mf.SUMS}"), f"{mf.day_prefix('audit', D2)}/{mf.SUMS}: missing",
                 id="a deleted SHA256SUMS"),
    pytest.param(lambda s: [s.delete(k) for k in s.list(mf.day_prefix("logs", D2) + "/")],
                 f"{mf.day_prefix('logs', D2)}/: no manifest for {D2} (a missing day)", id="a missing day"),
    pytest.param(lambda s: s.delete(mf.checkpoint_key("audit", D2, 2)), f"{mf.checkpoint_key('audit', D2, 2)}: checkpoint missing",
                 id="a deleted checkpoint"),
])
def test_verify_names_each_finding_in_one_line(catalog, shipped, keys, tamper, finding):
    tamper(shipped)
    report = verify(shipped, catalog, D1, D2, keys)
    assert not report.ok
    assert any(f.startswith(finding) for f in report.findings), report.findings
    assert all("\n" not in f for f in report.findings)


def test_a_checkpoint_of_another_log_is_refused(catalog, shipped, keys, pristine):
    reorigin(shipped, pristine / "key")
    findings = verify(shipped, catalog, D1, D2, keys).findings
    assert any("origin 'someone-else/audit' is not this log's" in f for f in findings), findings


def test_a_pristine_store_counts_every_kind_valid(catalog, shipped, keys):
    report = verify(shipped, catalog, D1, D2, keys)
    assert report.ok, report.findings
    assert report.lines() == ["logs manifests: 2/2 valid", "logs objects: 2/2 valid", "logs SHA256SUMS: 2/2 valid",
                              "audit manifests: 2/2 valid", "audit objects: 2/2 valid", "audit checkpoints: 2/2 valid",
                              "audit SHA256SUMS: 2/2 valid"]
    assert report.signers == {next(iter(keys)): 6}


def test_a_rewritten_audit_history_breaks_the_checkpoint(catalog, shipped, keys):
    rewrite(shipped, obj("audit", D1), lambda d: d[:-1].rsplit(b"\n", 1)[0] + b"\n")  # drop the last record
    findings = " ".join(verify(shipped, catalog, D1, D2, keys).findings)
    assert "modified" in findings and "Merkle checkpoint does not match the records" in findings


def test_a_chain_forged_with_a_key_in_the_store_is_not_trusted(catalog, shipped, keys):
    """Whoever can write the store can replace keys/ and re-sign everything: only a pinned key catches it."""
    forger = SigningKey.generate()
    for old in shipped.list("keys/"):
        shipped.delete(old)
    shipped.put(*mf.public_key_object(forger.verify_key))
    rewrite(shipped, obj("logs", D1), lambda d: d.replace(b'"code":500', b'"code":200'))
    stored = shipped.get(obj("logs", D1))
    raw = rollup.decompress(stored, ".zst")
    previous = None
    for seq, day in ((1, D1), (2, D2)):
        doc = json.loads(shipped.get(mf.manifest_key("logs", day, seq)))
        for entry in doc["objects"]:
            if entry["key"] == obj("logs", D1):
                entry.update(bytes=len(stored), stored_sha256=sha256_hex(stored), sha256=sha256_hex(raw))
        doc["previous"] = previous
        blob = mf.canonical(mf.sign(doc, forger))
        shipped.put(mf.manifest_key("logs", day, seq), blob)
        shipped.put(f"{mf.day_prefix('logs', day)}/{mf.SUMS}", mf.sha256sums(doc["objects"], mf.day_prefix("logs", day)))
        previous = {"key": mf.manifest_key("logs", day, seq), "sha256": sha256_hex(blob)}
    state = json.loads(shipped.get("state/logs.json"))
    shipped.put("state/logs.json", mf.canonical(dict(state, head=previous)))
    forged_key = {mf.key_id(forger.verify_key): bytes(forger.verify_key)}
    assert verify(shipped, catalog, D1, D2, forged_key, kinds=("logs",)).ok  # a perfect forgery, but for the key
    findings = verify(shipped, catalog, D1, D2, keys).findings
    assert f"{mf.manifest_key('logs', D1, 1)}: signed by key {mf.key_id(forger.verify_key)}, which is not trusted " \
           f"(keys/rollup-{mf.key_id(forger.verify_key)}.pub in the store is informational, not a trust anchor)" in findings


def test_deleting_the_newest_manifest_is_named(catalog, shipped, keys):
    shipped.delete(manifest("audit", D2))
    findings = verify(shipped, catalog, D1, D1, keys).findings  # even outside the range checked
    assert f"state/audit.json: the newest manifest {manifest('audit', D2)} is missing" in findings


def test_the_verify_cli_prints_the_trusted_key_and_counts_and_exits_1_on_a_finding(shipped, pristine):
    ok = cli("verify", "--store", f"file://{shipped.root}", "--date", D1, "--to", D2, "--public-key", str(pristine / "key.pub"))
    assert ok.returncode == 0, ok.stderr
    assert "logs manifests: 2/2 valid" in ok.stdout and "audit checkpoints: 2/2 valid" in ok.stdout
    assert f"trusted key {next(iter(trusted(pristine / 'key')))} ({pristine / 'key.pub'}): 6 signatures verified" in ok.stdout
    shipped.delete(obj("audit", D2))
    bad = cli("verify", "--store", f"file://{shipped.root}", "--date", D1, "--to", D2, "--key-file", str(pristine / "key"))
    assert bad.returncode == 1 and "audit objects: 1/2 valid" in bad.stdout
    assert f"FAIL {obj('audit', D2)}: deleted" in bad.stderr
    untrusted = cli("verify", "--store", f"file://{shipped.root}", "--date", D1)
    assert untrusted.returncode == 2 and "no trusted key" in untrusted.stderr


def test_the_record_cli_proves_one_trail_record_even_beside_a_quarantined_line(catalog, tmp_path):
    spool = tmp_path / "spool"
    write_spool(catalog, spool, [1], per_day=12)
    [path] = list(spool.rglob("audit/**/*.ndjson"))
    with path.open("ab") as handle:
        handle.write(b"this is not a trail record\n")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    store = LocalStore(tmp_path / "store")
    assert rollup.run(catalog, spool, store, client, mf.load_or_create_key(tmp_path / "key")).quarantined == 1
    record = json.loads(rollup.decompress(store.get(obj("audit", D2)), ".zst").splitlines()[7])
    proved = cli("verify", "--store", f"file://{store.root}", "--record", record["id"], "--key-file", str(tmp_path / "key"))
    assert proved.returncode == 0, proved.stderr
    proof = json.loads(proved.stdout)
    assert proof["verified"] and proof["checkpoint_signed"] and proof["leaf_index"] == 7 and proof["tree_size"] == 13
    missing = cli("verify", "--store", f"file://{store.root}", "--record", "nope", "--key-file", str(tmp_path / "key"))
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: no trail record with id 'nope' in {store.url}"
