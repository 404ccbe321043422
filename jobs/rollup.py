"""The rollup: spool NDJSON -> compressed, checksummed objects + signed daily manifests -> ClickHouse.

Per kind (logs, audit) and UTC day, oldest first: ship every closed spool file as
`<kind>/yyyy/mm/dd/<component>-<node>-<seq>.ndjson.zst` (deterministic names: a re-run overwrites),
verify each upload, write the day's signed manifest (chained to the previous day's) and
`SHA256SUMS`; for audit also the day's leaf hashes and a signed Merkle checkpoint of the whole
log with a consistency proof against the previous one; then load ClickHouse; only then move the
spool files to `archive/`. Every step is idempotent, so a run killed anywhere is finished by the
next run: objects are rewritten byte for byte, the ledger keeps ClickHouse exactly-once.

Test hook: VIGIA_FAULT=after:<step> makes the process exit hard (status 137) after that step
(steps: object, manifest, clickhouse-object, clickhouse-replaced, archive).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import zstandard

from jobs import manifest as mf
from jobs import merkle
from jobs.clickhouse_load import LoadObject, load_day
from jobs.store import sha256_hex
from vigia.model import Catalog

SPOOL_FILE = re.compile(r"(?P<stem>[a-z0-9_]+-[A-Za-z0-9_.-]+?)(?:\.(?P<seq>\d+))?\.ndjson$")
ORIGIN = "vigia/audit"


@dataclass(frozen=True)
class SpoolFile:
    kind: str  # logs | audit
    day: str   # YYYY-MM-DD
    path: Path
    stem: str  # component-node
    seq: int

    @property
    def object_name(self) -> str:
        return f"{self.stem}-{self.seq:04d}.ndjson"


@dataclass
class Summary:
    files: int = 0
    lines: int = 0
    bytes_in: int = 0
    bytes_stored: int = 0
    quarantined: int = 0
    days: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"files": self.files, "lines": self.lines, "bytes_in": self.bytes_in, "bytes_stored": self.bytes_stored,
                "quarantined": self.quarantined, "days": self.days, "seconds": round(self.seconds, 2)}


def fault(step: str) -> None:
    """The documented crash hook for tests (VIGIA_FAULT=after:<step>)."""
    if os.environ.get("VIGIA_FAULT") == f"after:{step}":
        os._exit(137)


def closed_files(spool: Path, catalog: Catalog, include_today: bool = False) -> list[SpoolFile]:
    """Spool files of past UTC days (or every day with include_today, for stopped writers)."""
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    found = []
    for kind, prefix in (("logs", "logs"), ("audit", "audit")):
        for path in sorted((Path(spool) / prefix).glob("*/*/*/*.ndjson")):
            y, m, d = path.parts[-4:-1]
            day = f"{y}-{m}-{d}"
            match = SPOOL_FILE.fullmatch(path.name)
            if not match or (day >= today and not include_today):
                continue
            found.append(SpoolFile(kind, day, path, match["stem"], int(match["seq"] or 0)))
    return found


def compress(data: bytes, codec: str) -> tuple[bytes, str]:
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data), ".zst"
    if codec == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0), ".gz"
    raise ValueError(f"unknown compression {codec!r}: use zstd or gzip")


def decompress(data: bytes, key: str) -> bytes:
    if key.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 34)
    if key.endswith(".gz"):
        return gzip.decompress(data)
    return data


def _ts_range(lines: list[bytes]) -> tuple[str, str]:
    stamps = []
    for line in lines:
        match = re.search(rb'"ts":"([^"]+)"', line)
        if match:
            stamps.append(match.group(1).decode())
    return (min(stamps), max(stamps)) if stamps else ("", "")


def previous_manifest(store, prefix: str, day: str) -> tuple[str, dict] | None:
    keys = [k for k in store.list(f"{prefix}/") if k.endswith("/" + mf.MANIFEST) and k < mf.day_prefix(prefix, day)]
    if not keys:
        return None
    key = max(keys)
    return key, json.loads(store.get(key))


def all_leaves_before(store, prefix: str, day: str) -> list[bytes]:
    leaves: list[bytes] = []
    for key in store.list(f"{prefix}/"):
        if key.endswith("/" + mf.LEAVES) and key < mf.day_prefix(prefix, day):
            blob = store.get(key)
            leaves += [blob[i:i + 32] for i in range(0, len(blob), 32)]
    return leaves


def ship_day(store, catalog: Catalog, kind: str, day: str, files: list[SpoolFile], key, codec: str,
             summary: Summary, progress=None) -> list[LoadObject]:
    prefix = catalog.storage.logs_prefix if kind == "logs" else catalog.storage.audit_prefix
    folder = mf.day_prefix(prefix, day)
    existing = previous = None
    if store.exists(f"{folder}/{mf.MANIFEST}"):
        existing = json.loads(store.get(f"{folder}/{mf.MANIFEST}"))
    found = previous_manifest(store, prefix, day)
    if found:
        previous = {"key": found[0], "sha256": sha256_hex(store.get(found[0]))}
    entries: dict[str, dict] = {o["key"]: o for o in (existing or {}).get("objects", [])}
    loads: dict[str, LoadObject] = {}
    for spool_file in sorted(files, key=lambda f: (f.stem, f.seq)):
        raw = spool_file.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raw += b"\n"  # a writer killed mid-line: the fragment is kept, and quarantined by the load
        stored, suffix = compress(raw, codec)
        object_key = f"{folder}/{spool_file.object_name}{suffix}"
        for other in [k for k in entries if k.startswith(f"{folder}/{spool_file.object_name}") and k != object_key]:
            entries.pop(other)  # recompressed with another codec: the new object replaces it
            store.delete(other)
        store.put(object_key, stored)
        fault("object")
        lines = raw.splitlines()
        first, last = _ts_range(lines)
        entries[object_key] = {"key": object_key, "bytes": len(stored), "stored_sha256": sha256_hex(stored),
                               "sha256": sha256_hex(raw), "lines": len(lines), "first_ts": first, "last_ts": last}
        loads[object_key] = LoadObject(object_key, entries[object_key]["sha256"], len(lines), raw)
        summary.files += 1
        summary.lines += len(lines)
        summary.bytes_in += len(raw)
        summary.bytes_stored += len(stored)
        if progress:
            progress(len(raw))
    objects = [entries[k] for k in sorted(entries)]
    doc = {"version": 1, "kind": kind, "day": day, "objects": objects, "previous": previous}
    if kind == "audit":
        doc["checkpoint"] = audit_checkpoint(store, prefix, folder, day, objects, loads, previous)
    signed = mf.sign(doc, key)
    store.put(f"{folder}/{mf.SUMS}", mf.sha256sums(objects, folder))
    store.put(f"{folder}/{mf.MANIFEST}", mf.canonical(signed))
    fault("manifest")
    # Objects of earlier runs for this day are loaded again from the store, so the day stays whole.
    for entry in objects:
        if entry["key"] not in loads:
            data = decompress(store.get(entry["key"]), entry["key"])
            loads[entry["key"]] = LoadObject(entry["key"], entry["sha256"], entry["lines"], data)
    return [loads[k] for k in sorted(loads)]


def audit_checkpoint(store, prefix: str, folder: str, day: str, objects: list[dict], loads: dict, previous) -> dict:
    """Extend the log with the day's records; sign size and root; prove consistency with yesterday."""
    day_leaves = []
    for entry in objects:
        data = loads[entry["key"]].data if entry["key"] in loads else decompress(store.get(entry["key"]), entry["key"])
        day_leaves += [merkle.leaf_hash(line) for line in data.splitlines()]
    store.put(f"{folder}/{mf.LEAVES}", b"".join(day_leaves))
    before = all_leaves_before(store, prefix, day)
    leaves = before + day_leaves
    checkpoint = {"origin": ORIGIN, "size": len(leaves), "root": merkle.root(leaves).hex()}
    if before:
        checkpoint["previous_size"] = len(before)
        checkpoint["consistency"] = [h.hex() for h in merkle.consistency_proof(len(before), leaves)]
    return checkpoint


def run(catalog: Catalog, spool: Path, store, client, key, codec: str = "zstd", include_today: bool = False,
        progress=None) -> Summary:
    start = time.perf_counter()
    summary = Summary()
    key_name, key_blob = mf.public_key_object(key.verify_key)
    if not store.exists(key_name):
        store.put(key_name, key_blob)
    files = closed_files(spool, catalog, include_today)
    groups: dict[tuple[str, str], list[SpoolFile]] = {}
    for spool_file in files:
        groups.setdefault((spool_file.day, spool_file.kind), []).append(spool_file)
    for (day, kind), group in sorted(groups.items()):
        objects = ship_day(store, catalog, kind, day, group, key, codec, summary, progress)
        result = load_day(client, catalog, kind, day, objects, fault=fault)
        summary.quarantined += result.quarantined
        if result.quarantined:
            store.put(f"quarantine/{kind}/{day.replace('-', '/')}/quarantine.ndjson", quarantine_object(client, catalog, kind, day))
        for spool_file in group:
            target = Path(spool) / "archive" / spool_file.path.relative_to(spool)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(spool_file.path, target)
        fault("archive")
        summary.days.append(f"{kind} {day}")
    summary.seconds = time.perf_counter() - start
    return summary


def quarantine_object(client, catalog: Catalog, kind: str, day: str) -> bytes:
    from vigia import conventions as names
    rows = client.query(f"SELECT file, line, reason, raw FROM {catalog.storage.clickhouse_database}.{names.QUARANTINE_TABLE} "
                        "WHERE kind = %(k)s AND day = %(d)s ORDER BY file, line", parameters={"k": kind, "d": day}).result_rows
    return b"".join(json.dumps({"file": f, "line": n, "reason": r, "raw": raw}).encode() + b"\n" for f, n, r, raw in rows)
