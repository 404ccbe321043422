"""`vigia verify`: prove later that nothing shipped was altered, lost, moved or added.

Like `aws cloudtrail validate-logs`: walk each kind's chain of daily manifests, check their
signatures and links, every object's stored and uncompressed SHA-256, the audit log's Merkle
checkpoints and their consistency, and line counts against ClickHouse. Unlike it, also name
every object in the store that no manifest lists. Works on S3 and on a downloaded folder alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from jobs import manifest as mf
from jobs import merkle
from jobs.rollup import decompress
from jobs.store import sha256_hex
from vigia import conventions as names
from vigia.model import Catalog

SIDE_FILES = (mf.MANIFEST, mf.SUMS, mf.LEAVES)


@dataclass
class Report:
    findings: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    valid: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings


def _day_of(key: str) -> str:
    parts = key.split("/")
    return "-".join(parts[1:4])


def verify(store, catalog: Catalog, start: str, end: str, client=None, today: date | None = None) -> Report:
    """`today` decides which days retention may have expired (default: the real UTC day)."""
    report = Report()
    today = today or datetime.now(timezone.utc).date()
    keys = mf.public_keys(store)
    for kind, prefix in (("logs", catalog.storage.logs_prefix), ("audit", catalog.storage.audit_prefix)):
        all_keys = store.list(f"{prefix}/")
        manifests = sorted(k for k in all_keys if k.endswith("/" + mf.MANIFEST))
        listed_everywhere: set[str] = set()
        report.checked[kind] = report.valid[kind] = 0
        earlier_leaves: list[bytes] = []
        previous_key = previous_checkpoint = None
        # Roots can be recomputed only from the log's first day; after expiry, proofs still link the days.
        history_complete = bool(manifests) and json.loads(store.get(manifests[0])).get("previous") is None
        for key in manifests:
            day = _day_of(key)
            doc = json.loads(store.get(key))
            objects = doc.get("objects", [])
            listed_everywhere |= {o["key"] for o in objects}
            if day < start:
                previous_key, earlier_leaves, previous_checkpoint = key, earlier_leaves + _leaves(store, key), doc.get("checkpoint")
                continue
            if day > end:
                break
            if not mf.signature_ok(doc, keys):
                report.findings.append(f"{key}: manifest signature invalid or key unknown")
            expected_prev = {"key": previous_key, "sha256": sha256_hex(store.get(previous_key))} if previous_key else None
            expired_link = previous_key is None and doc.get("previous") and _expired(catalog, kind,
                                                                                     _day_of(doc["previous"]["key"]), today)
            if doc.get("previous") != expected_prev and not expired_link:
                report.findings.append(f"{key}: chain broken: it names {doc.get('previous')}, the previous manifest is {expected_prev}")
            for entry in objects:
                report.checked[kind] += 1
                problem = _check_object(store, entry, all_keys)
                if problem:
                    report.findings.append(problem)
                else:
                    report.valid[kind] += 1
            if kind == "audit":
                day_leaves = _check_checkpoint(store, key, doc, earlier_leaves, previous_checkpoint, report, history_complete)
                earlier_leaves += day_leaves
                previous_checkpoint = doc.get("checkpoint")
            if client is not None:
                _check_clickhouse(client, catalog, kind, day, objects, report)
            previous_key = key
        for key in all_keys:
            if key.rsplit("/", 1)[-1] in SIDE_FILES or key in listed_everywhere:
                continue
            if start <= _day_of(key) <= end:
                report.findings.append(f"{key}: in the store but listed by no manifest")
    return report


def _check_object(store, entry: dict, all_keys: list[str]) -> str | None:
    key = entry["key"]
    if not store.exists(key):
        for other in all_keys:
            if other != key and other.rsplit("/", 1)[-1] not in SIDE_FILES and sha256_hex(store.get(other)) == entry["stored_sha256"]:
                return f"{key}: moved to {other}"
        return f"{key}: deleted"
    stored = store.get(key)
    if sha256_hex(stored) != entry["stored_sha256"]:
        return f"{key}: modified (stored bytes differ from the manifest)"
    try:
        raw = decompress(stored, key)
    except Exception:  # noqa: BLE001 - corrupt compression is a modification
        return f"{key}: modified (cannot be decompressed)"
    if sha256_hex(raw) != entry["sha256"] or len(raw.splitlines()) != entry["lines"]:
        return f"{key}: modified (content differs from the manifest)"
    return None


def _leaves(store, manifest_key: str) -> list[bytes]:
    key = manifest_key.rsplit("/", 1)[0] + "/" + mf.LEAVES
    if not store.exists(key):
        return []
    blob = store.get(key)
    return [blob[i:i + 32] for i in range(0, len(blob), 32)]


def _expired(catalog: Catalog, kind: str, day: str, today: date) -> bool:
    """Is `day` beyond the kind's retention, so its objects may have expired (lifecycle)?"""
    days = catalog.retention.logs_days if kind == "logs" else catalog.retention.audit_days.default
    return day < (today - timedelta(days=days)).isoformat()


def _check_checkpoint(store, key: str, doc: dict, earlier: list[bytes], previous: dict | None, report: Report,
                      history_complete: bool = True) -> list[bytes]:
    checkpoint = doc.get("checkpoint") or {}
    day_leaves = []
    for entry in doc.get("objects", []):
        if store.exists(entry["key"]):
            try:
                day_leaves += [merkle.leaf_hash(line) for line in decompress(store.get(entry["key"]), entry["key"]).splitlines()]
            except Exception:  # noqa: BLE001 - already reported as modified
                pass
    if _leaves(store, key) != day_leaves:
        report.findings.append(f"{key}: the day's leaf hashes differ from its records")
    leaves = earlier + day_leaves
    if history_complete and (checkpoint.get("size") != len(leaves) or checkpoint.get("root") != merkle.root(leaves).hex()):
        report.findings.append(f"{key}: Merkle checkpoint does not match the records (history rewritten?)")
    if previous:
        proof = [bytes.fromhex(h) for h in checkpoint.get("consistency", [])]
        if not merkle.verify_consistency(previous["size"], checkpoint.get("size", 0), bytes.fromhex(previous["root"]),
                                         bytes.fromhex(checkpoint.get("root", "00")), proof):
            report.findings.append(f"{key}: checkpoint is not consistent with the previous day's")
    return day_leaves


def _check_clickhouse(client, catalog: Catalog, kind: str, day: str, objects: list[dict], report: Report) -> None:
    db = catalog.storage.clickhouse_database
    table = names.LOGS_TABLE if kind == "logs" else names.TRAILS_TABLE
    for entry in objects:
        rows = client.query(f"SELECT count() FROM {db}.{table} WHERE _file = %(f)s", parameters={"f": entry["key"]}).result_rows[0][0]
        bad = client.query(f"SELECT count() FROM {db}.{names.QUARANTINE_TABLE} WHERE file = %(f)s",
                           parameters={"f": entry["key"]}).result_rows[0][0]
        if rows + bad != entry["lines"]:
            report.findings.append(f"{entry['key']}: ClickHouse holds {rows} rows + {bad} quarantined, the manifest says {entry['lines']} lines")


def inclusion(store, catalog: Catalog, record_id: str) -> dict:
    """Find a trail record and prove it is in the signed checkpoint of its day."""
    prefix = catalog.storage.audit_prefix
    leaves: list[bytes] = []
    found: tuple[str, int] | None = None
    for key in sorted(k for k in store.list(f"{prefix}/") if k.endswith("/" + mf.MANIFEST)):
        doc = json.loads(store.get(key))
        for entry in doc["objects"]:
            for line in decompress(store.get(entry["key"]), entry["key"]).splitlines():
                leaves.append(merkle.leaf_hash(line))
                if found is None and json.loads(line).get("id") == record_id:
                    found = (entry["key"], len(leaves) - 1)
        if found is not None:
            index = found[1]
            checkpoint = doc["checkpoint"]
            proof = merkle.inclusion_proof(index, leaves)
            ok = merkle.verify_inclusion(index, checkpoint["size"], leaves[index], proof, bytes.fromhex(checkpoint["root"]))
            return {"record_id": record_id, "object": found[0], "leaf_index": index, "tree_size": checkpoint["size"],
                    "root": checkpoint["root"], "audit_path": [h.hex() for h in proof], "verified": ok,
                    "checkpoint_signed": mf.signature_ok(doc, mf.public_keys(store))}
    raise KeyError(f"no trail record with id {record_id!r} in {store.url}")
