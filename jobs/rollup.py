"""The rollup: spool NDJSON -> compressed, checksummed objects + signed manifests -> ClickHouse.

Which files: `<kind>/yyyy/mm/dd/<component>-<node>[.N].ndjson` is closed GRACE seconds after its UTC
day ends (writers flush at least every second, so lines written just before midnight are on disk by
then); a rotated `<name>.ndjson.N` is closed once unmodified for GRACE. With `include_today`, open
files are shipped too, as a snapshot of their whole lines, and stay where they are. Any other file
in the spool (a writer's sidecar, a stray name) is counted and named in the summary, never shipped.

Per kind and UTC day, oldest first, one file at a time: ship the bytes of each file that were not
shipped yet as `<kind>/yyyy/mm/dd/<component>-<node>-<seq>.ndjson.zst` (a later part of the same file
is `...-at<offset>.ndjson.zst`; names are deterministic, so a re-run overwrites), verify each upload,
then append a signed manifest to the kind's chain (for audit with a signed Merkle checkpoint; a day
already sealed gets a supplementary manifest, never a rewritten one) and rewrite the day's
`SHA256SUMS`. Closed days without files get an empty manifest, so a missing day always shows. Then
load ClickHouse, write the day's redacted quarantine object, and only then move each closed file to
`archive/`, and only if it still holds exactly what was shipped (else its rest ships next run).
A run that finished enforces the lifecycle on a local store. Every step is idempotent, so a run
killed anywhere is finished by the next one.

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
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import zstandard
from nacl.signing import SigningKey

from jobs import lifecycle
from jobs import manifest as mf
from jobs import merkle
from jobs.clickhouse_load import LoadObject, load_day, record_loaded
from jobs.line_rules import key_names
from jobs.store import LocalStore, sha256_hex
from vigia import conventions as names
from vigia.model import Catalog

KINDS = ("logs", "audit")  # the spool's folders and the manifests' kinds
SPOOL_FILE = re.compile(r"(?P<stem>[a-z0-9_]+-[A-Za-z0-9_.:-]+?)(?:\.(?P<seq>\d+))?\.ndjson(?:\.(?P<rotated>\d+))?")
DAY_FOLDER = re.compile(r"\d{4}/\d{2}/\d{2}")
GRACE = 120  # seconds after a day's end (or a rotated file's last change) before a file counts as closed
DAY = 86400


@dataclass(frozen=True)
class SpoolFile:
    kind: str  # logs | audit
    day: str   # YYYY-MM-DD
    path: Path
    stem: str  # component-node
    seq: int
    rotated: int | None  # N of a rotated `<name>.ndjson.N`
    live: bool  # a writer may still append: ship a snapshot of its whole lines, never move it

    def object_name(self, start: int) -> str:
        """Deterministic and distinct per file and byte offset."""
        name = f"{self.stem}-{self.seq:04d}" + (f"-r{self.rotated}" if self.rotated is not None else "")
        return name + (f"-at{start}" if start else "") + ".ndjson"


@dataclass
class Summary:
    files: int = 0  # file parts shipped
    lines: int = 0
    bytes_in: int = 0
    bytes_stored: int = 0
    quarantined: int = 0
    manifests: int = 0
    expired: int = 0  # keys the lifecycle removed from a local store
    ignored: list[str] = field(default_factory=list)  # spool files that are not NDJSON spool files
    left: list[str] = field(default_factory=list)  # closed files left in the spool, and why
    days: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"files": self.files, "lines": self.lines, "bytes_in": self.bytes_in, "bytes_stored": self.bytes_stored,
                "quarantined": self.quarantined, "manifests": self.manifests, "expired": self.expired,
                "ignored": len(self.ignored), "ignored_files": self.ignored, "left": self.left, "days": self.days,
                "seconds": round(self.seconds, 2)}


def fault(step: str) -> None:
    """The documented crash hook for tests (VIGIA_FAULT=after:<step>)."""
    if os.environ.get("VIGIA_FAULT") == f"after:{step}":
        os._exit(137)


def kind_prefix(catalog: Catalog, kind: str) -> str:
    return catalog.storage.logs_prefix if kind == "logs" else catalog.storage.audit_prefix


def origin(catalog: Catalog) -> str:
    """The name the audit log's checkpoints carry, so a checkpoint of another log is refused."""
    return f"{catalog.storage.bucket}/{catalog.storage.audit_prefix}"


def scan_spool(spool: Path, now: float, include_today: bool = False) -> tuple[list[SpoolFile], list[str]]:
    """The closed spool files (and open ones with include_today), and every other file under
    logs/ and audit/ by its path in the spool."""
    files, ignored = [], []
    for kind in KINDS:
        root = Path(spool) / kind
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            folder = path.parent.relative_to(root).as_posix()
            match = SPOOL_FILE.fullmatch(path.name)
            try:
                day_end = datetime.fromisoformat(folder.replace("/", "-") + "T00:00:00+00:00").timestamp() + DAY
            except ValueError:
                day_end = None
            if not match or not DAY_FOLDER.fullmatch(folder) or day_end is None:
                ignored.append(path.relative_to(spool).as_posix())
                continue
            rotated = match["rotated"]
            closed = now >= day_end + GRACE or (rotated is not None and now >= path.stat().st_mtime + GRACE)
            if closed or include_today:
                files.append(SpoolFile(kind, folder.replace("/", "-"), path, match["stem"], int(match["seq"] or 0),
                                       int(rotated) if rotated else None, not closed))
    return files, ignored


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


def read_part(spool_file: SpoolFile, start: int) -> bytes | None:
    """The file's bytes from `start`: the whole lines of an open file; all of a closed one (a line cut
    by a killed writer is kept, and quarantined by the load). None when there is nothing new, or when
    a closed file changed during the read (its writer is not done: it ships on a later run)."""
    before = spool_file.path.stat()
    if before.st_size <= start:
        return None
    with spool_file.path.open("rb") as handle:
        handle.seek(start)
        data = handle.read(before.st_size - start)
    if spool_file.live:
        return data[:data.rfind(b"\n") + 1] or None
    after = spool_file.path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        return None
    return data


class Chain:
    """One kind's chain of manifests as the rollup extends it.

    The head (seq, key and SHA-256 of the newest manifest, the newest sealed day, and for audit the
    Merkle log's size and frontier) is saved in `state/<kind>.json` after each manifest. That file
    never expires, so neither the chain nor the log restarts when lifecycle removes old days; a
    manifest newer than the state (a run killed between the two writes) takes precedence.
    """

    def __init__(self, store, catalog: Catalog, kind: str):
        self.store, self.kind, self.prefix, self.origin = store, kind, kind_prefix(catalog, kind), origin(catalog)
        self.manifests = {key: seq for key in store.list(f"{self.prefix}/") if (seq := mf.manifest_seq(self.prefix, key))}
        try:
            self.state = _parse(mf.state_key(kind), store.get(mf.state_key(kind)))
        except KeyError:
            self.state = {"seq": 0, "head": None, "day": None} | ({"log": {"size": 0, "frontier": []}} if kind == "audit" else {})
        days = [mf.day_file(self.prefix, key)[0] for key in self.manifests]
        self.state["day"] = max(filter(None, [self.state["day"], *days]), default=None)
        newest = max(self.manifests, key=self.manifests.get, default=None)
        if newest and self.manifests[newest] > self.state["seq"]:
            blob = store.get(newest)
            doc = _parse(newest, blob)
            self.state.update(seq=doc["seq"], head={"key": newest, "sha256": sha256_hex(blob)})
            if kind == "audit":
                checkpoint = _parse(doc["checkpoint"]["key"], store.get(doc["checkpoint"]["key"]))
                self.state["log"] = {"size": checkpoint["size"], "frontier": checkpoint["frontier"]}

    def day_entries(self, day: str) -> list[dict]:
        """Every object the day's manifests list, in chain order."""
        folder = mf.day_prefix(self.prefix, day)
        entries = []
        for key in sorted((k for k in self.manifests if k.startswith(folder + "/")), key=self.manifests.get):
            entries += _parse(key, self.store.get(key))["objects"]
        return entries

    def append(self, day: str, entries: list[dict], leaves: list[bytes], key: SigningKey) -> None:
        """Sign and write the next manifest (for audit, first its checkpoint); `save` makes it the head."""
        seq = self.state["seq"] + 1
        doc = {"version": 2, "kind": self.kind, "day": day, "seq": seq, "previous": self.state["head"], "objects": entries}
        log = None
        if self.kind == "audit":
            base = self.state["log"]
            tree = merkle.Tree(base["size"], [bytes.fromhex(h) for h in base["frontier"]], leaves)
            log = {"size": tree.size, "frontier": [h.hex() for h in tree.frontier()]}
            checkpoint = mf.canonical(mf.sign({"origin": self.origin, "size": tree.size, "root": tree.root().hex(),
                                               "frontier": log["frontier"], "base": base,
                                               "consistency": [h.hex() for h in tree.consistency_proof()]}, key))
            doc["checkpoint"] = {"key": mf.checkpoint_key(self.prefix, day, seq), "sha256": sha256_hex(checkpoint)}
            self.store.put(doc["checkpoint"]["key"], checkpoint)
        blob = mf.canonical(mf.sign(doc, key))
        manifest_key = mf.manifest_key(self.prefix, day, seq)
        self.store.put(manifest_key, blob)
        self.manifests[manifest_key] = seq
        self.state.update(seq=seq, head={"key": manifest_key, "sha256": sha256_hex(blob)},
                          day=max(filter(None, [self.state["day"], day])))
        if log is not None:
            self.state["log"] = log

    def save(self) -> None:
        self.store.put(mf.state_key(self.kind), mf.canonical(self.state))


def _parse(key: str, blob: bytes) -> dict:
    """JSON the rollup wrote; a corrupt one stops the run naming it."""
    try:
        return json.loads(blob)
    except ValueError as exc:
        raise ValueError(f"{key}: not valid JSON ({exc}); `vigia verify` names what else is wrong") from None


def ship_day(store, chain: Chain, day: str, files: list[SpoolFile], key: SigningKey, codec: str, summary: Summary,
             progress=None) -> tuple[list[LoadObject], dict[str, int]]:
    """Ship what is new in the day's files, one file at a time; append a manifest when something was
    (or to seal a day that has none); rewrite SHA256SUMS. Returns every object of the day, for the
    load, and how far each spool file has been shipped."""
    folder = mf.day_prefix(chain.prefix, day)
    earlier = chain.day_entries(day)
    ends = {e["source"]["file"]: e["source"]["end"] for e in earlier}
    in_folder = [k for k in store.list(f"{folder}/") if k != f"{folder}/{mf.SUMS}"]
    listed = {e["key"] for e in earlier}
    new, leaves, raws, waiting = [], [], {}, False
    for spool_file in sorted(files, key=lambda f: f.object_name(0)):
        start = ends.get(spool_file.path.name, 0)
        part = read_part(spool_file, start)
        if part is None:
            waiting = waiting or spool_file.path.stat().st_size > start
            continue
        raw = part if part.endswith(b"\n") else part + b"\n"
        stored, suffix = compress(raw, codec)
        name = f"{folder}/{spool_file.object_name(start)}"
        for stale in [k for k in in_folder if k.startswith(name + ".") and k not in listed]:
            store.delete(stale)  # a killed run's upload under another codec
        store.put(name + suffix, stored)
        fault("object")
        lines = raw.splitlines()
        first, last = _ts_range(lines)
        new.append({"key": name + suffix, "bytes": len(stored), "stored_sha256": sha256_hex(stored),
                    "sha256": sha256_hex(raw), "lines": len(lines), "first_ts": first, "last_ts": last,
                    "source": {"file": spool_file.path.name, "start": start, "end": start + len(part)}})
        if chain.kind == "audit":
            leaves += [merkle.leaf_hash(line) for line in lines]
        raws[name + suffix] = raw
        ends[spool_file.path.name] = start + len(part)
        summary.files += 1
        summary.lines += len(lines)
        summary.bytes_in += len(raw)
        summary.bytes_stored += len(stored)
        if progress:
            progress(len(part))
    if new or not (earlier or waiting):
        chain.append(day, new, leaves, key)
        fault("manifest")
        chain.save()
        summary.manifests += 1
    store.put(f"{folder}/{mf.SUMS}", mf.sha256sums(earlier + new, folder))
    objects = []
    for entry in earlier + new:
        raw = raws.pop(entry["key"], None) or decompress(store.get(entry["key"]), entry["key"])
        objects.append(LoadObject(entry["key"], entry["sha256"], entry["lines"], raw))
    return objects, ends


def archive(spool: Path, files: list[SpoolFile], ends: dict[str, int], summary: Summary) -> None:
    """Move each closed file (with its sidecars) to archive/ if it holds exactly what was shipped;
    one that changed stays, and the rest of it ships on the next run."""
    for spool_file in files:
        if spool_file.live:
            continue
        relative = spool_file.path.relative_to(spool)
        size, shipped = spool_file.path.stat().st_size, ends.get(spool_file.path.name, 0)
        if size != shipped:
            summary.left.append(f"{relative.as_posix()}: {size} bytes, {shipped} shipped; the rest ships on a later run")
            continue
        target = Path(spool) / "archive" / relative.parent
        target.mkdir(parents=True, exist_ok=True)
        sidecars = [p for p in spool_file.path.parent.iterdir()
                    if p.name.startswith(spool_file.path.name + ".") and not SPOOL_FILE.fullmatch(p.name)]
        for path in [spool_file.path, *sidecars]:
            os.replace(path, target / path.name)


def quarantine_object(client, catalog: Catalog, kind: str, day: str, objects: list[LoadObject]) -> bytes:
    """The day's quarantined lines, redacted like the table: object, line number, reason, the line's
    top-level key names (a name that is not an identifier or looks like a secret is replaced), and
    the SHA-256 of the raw line, which identifies it without keeping any value."""
    rows = client.query(f"SELECT file, line, reason FROM {catalog.storage.clickhouse_database}.{names.QUARANTINE_TABLE} "
                        "WHERE kind = %(k)s AND day = %(d)s ORDER BY file, line", parameters={"k": kind, "d": day}).result_rows
    files = {row[0] for row in rows}
    lines = {obj.key: obj.data.splitlines() for obj in objects if obj.key in files}
    out = []
    for file, number, reason in rows:
        raw = lines[file][number - 1] if 0 < number <= len(lines.get(file, ())) else None
        out.append(mf.canonical({"object": file, "line": number, "reason": reason, "keys": _key_names(raw),
                                 "sha256": sha256_hex(raw) if raw is not None else None}) + b"\n")
    return b"".join(out)


def _key_names(raw: bytes | None) -> list[str]:
    """The redacted key names of a raw line (none when it is not a JSON object)."""
    try:
        return key_names(json.loads(raw)) if raw is not None else []
    except ValueError:
        return []


def run(catalog: Catalog, spool: Path, store, client, key: SigningKey, codec: str = "zstd", include_today: bool = False,
        progress=None, now: float | None = None, audit_days: int | None = None) -> Summary:
    """One rollup; `now` (epoch seconds) decides which files are closed, `audit_days` the audit retention."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    catalog.retention.audit_days.policy(audit_days)  # a bad policy fails before anything is shipped
    summary = Summary()
    files, summary.ignored = scan_spool(spool, now, include_today)
    key_name, key_blob = mf.public_key_object(key.verify_key)
    if not store.exists(key_name):
        store.put(key_name, key_blob)  # informational: verify trusts only keys given to it
    first_day = min((f.day for f in files), default=None)
    last_closed = (datetime.fromtimestamp(now - GRACE, timezone.utc).date() - timedelta(days=1)).isoformat()
    for kind in KINDS:
        chain = Chain(store, catalog, kind)
        by_day: dict[str, list[SpoolFile]] = {}
        for spool_file in files:
            if spool_file.kind == kind:
                by_day.setdefault(spool_file.day, []).append(spool_file)
        for day in sorted(set(by_day) | set(_unsealed(chain.state["day"], first_day, last_closed))):
            objects, ends = ship_day(store, chain, day, by_day.get(day, []), key, codec, summary, progress)
            if objects:
                loaded = load_day(client, catalog, kind, day, objects, fault=fault, write_ledger=False, audit_days=audit_days)
                summary.quarantined += loaded.quarantined
                quarantined = quarantine_object(client, catalog, kind, day, objects)
                if quarantined:
                    store.put(f"{lifecycle.QUARANTINE}/{mf.day_prefix(kind, day)}/quarantine.ndjson", quarantined)
                record_loaded(client, catalog, kind, day, objects, loaded)  # last: a crash before it redoes the day
            archive(spool, by_day.get(day, []), ends, summary)
            fault("archive")
            summary.days.append(f"{kind} {day}")
    if isinstance(store, LocalStore):
        summary.expired = len(lifecycle.enforce(store, catalog, datetime.fromtimestamp(now, timezone.utc).date(), audit_days))
    summary.seconds = time.perf_counter() - started
    return summary


def _unsealed(sealed: str | None, first_day: str | None, last_closed: str) -> list[str]:
    """Closed days after the newest sealed one (from the first day shipped, for a new chain)."""
    start = date.fromisoformat(sealed) + timedelta(days=1) if sealed else (date.fromisoformat(first_day) if first_day else None)
    if start is None:
        return []
    return [(start + timedelta(days=i)).isoformat() for i in range((date.fromisoformat(last_closed) - start).days + 1)]
