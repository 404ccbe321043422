"""`vigia verify`: prove later that nothing shipped was altered, lost, moved or added.

Like `aws cloudtrail validate-logs`: walk each kind's chain of manifests in the order they were
written, check their signatures against trusted keys only (a key found in the store proves nothing:
whoever can rewrite the store can replace it), their links, every object's stored and uncompressed
SHA-256, each day's SHA256SUMS, the audit log's signed Merkle checkpoints (recomputed from the records
and the previous checkpoint's frontier, origin and consistency proof included), and line counts
against ClickHouse. Unlike it, also name every object in the store that no manifest lists, wherever
it is, and every past day in range that has no manifest. An object whose bytes are those of another
listed object is reported as reordered, one found under an unlisted name as moved (matched by the
hashes in the manifests: only unlisted objects are downloaded to look). Every finding is one line
that starts with the key it is about. Works on S3 and on a downloaded folder alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from jobs import lifecycle
from jobs import manifest as mf
from jobs import merkle
from jobs.rollup import KINDS, decompress, kind_prefix, origin
from jobs.store import sha256_hex
from vigia import conventions as names
from vigia.model import Catalog

# Keys outside the kinds' prefixes that belong to the store's layout.
LAYOUT = re.compile(r"keys/rollup-[0-9a-f]{16}\.pub|state/(logs|audit)\.json"
                    r"|quarantine/(logs|audit)/\d{4}/\d{2}/\d{2}/quarantine\.ndjson|gold/.+")


class VerifyError(RuntimeError):
    """A file verify cannot use; the message names it."""


@dataclass
class Report:
    findings: list[str] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)  # "logs objects" -> [valid, checked]
    signers: dict[str, int] = field(default_factory=dict)  # trusted key id -> signatures it verified

    @property
    def ok(self) -> bool:
        return not self.findings

    def tally(self, what: str, before: int) -> None:
        """One more `what` checked; valid when no finding was added since there were `before`."""
        valid, checked = self.counts.setdefault(what, [0, 0])
        self.counts[what] = [valid + (len(self.findings) == before), checked + 1]

    def lines(self) -> list[str]:
        return [f"{what}: {valid}/{checked} valid" for what, (valid, checked) in self.counts.items()]


def verify(store, catalog: Catalog, start: str, end: str, trusted: dict[str, bytes], client=None,
           today: date | None = None, audit_days: int | None = None, kinds: tuple[str, ...] = KINDS,
           allowed: tuple[str, ...] = ()) -> Report:
    """Check the days [start, end]. `today` decides which days are past and which may have expired;
    `allowed` names extra keys that belong (an audit bundle's index)."""
    report = Report()
    today = today or datetime.now(timezone.utc).date()
    keys = store.list("")
    store_key_ids = {k[len("keys/rollup-"):-len(".pub")] for k in keys if k.startswith("keys/rollup-") and k.endswith(".pub")}
    for kind in kinds:
        prefix = kind_prefix(catalog, kind)
        _Kind(store, catalog, kind, [k for k in keys if k.startswith(prefix + "/")], trusted, store_key_ids, report,
              today, audit_days).run(start, end, client)
    prefixes = tuple(kind_prefix(catalog, kind) + "/" for kind in KINDS)
    for key in keys:
        if not key.startswith(prefixes) and not LAYOUT.fullmatch(key) and key not in allowed:
            report.findings.append(f"{key}: in the store but listed by no manifest (outside the store's layout)")
    return report


class _Kind:
    """The checks of one kind (logs or audit) over a day range."""

    def __init__(self, store, catalog: Catalog, kind: str, keys: list[str], trusted: dict[str, bytes],
                 store_key_ids: set[str], report: Report, today: date, audit_days: int | None):
        self.store, self.catalog, self.kind, self.trusted, self.report = store, catalog, kind, trusted, report
        self.prefix, self.store_key_ids, self.today, self.audit_days = kind_prefix(catalog, kind), store_key_ids, today, audit_days
        self.blobs: dict[str, bytes] = {}  # manifest key -> bytes
        self.docs: dict[str, dict] = {}  # manifest key -> parsed manifest (the readable ones)
        self.broken: dict[str, str] = {}  # manifest key -> why it cannot be read
        self.by_seq: dict[int, list[str]] = {}  # more than one key per seq: the chain forks
        sums, other = [], []
        for key in keys:
            seq = mf.manifest_seq(self.prefix, key)
            if seq is not None:
                self.by_seq.setdefault(seq, []).append(key)
                self.blobs[key] = store.get(key)
                try:
                    self.docs[key] = _manifest(self.blobs[key])
                except (ValueError, KeyError, TypeError) as exc:
                    self.broken[key] = f"{key}: not a valid manifest ({exc})"
            elif key.endswith("/" + mf.SUMS) and mf.day_file(self.prefix, key):
                sums.append(key)
            else:
                other.append(key)
        self.listed = {e["key"]: e for doc in self.docs.values() for e in doc["objects"]}
        self.by_hash = {e["stored_sha256"]: e["key"] for e in self.listed.values()}
        checkpoints = {doc["checkpoint"].get("key") for doc in self.docs.values() if isinstance(doc.get("checkpoint"), dict)}
        self.days = {self.day_of(key) for key in self.blobs}
        self.unlisted = [k for k in other if k not in self.listed and k not in checkpoints]
        self.unlisted += [k for k in sums if self.day_of(k) not in self.days]
        self.sums = set(sums) - set(self.unlisted)
        self.moved_targets: set[str] = set()
        self._unlisted_hashes: dict[str, str] | None = None
        self._checkpoints: dict[str, dict | None] = {}

    def find(self, finding: str) -> None:
        self.report.findings.append(finding)

    def expired(self, day: str) -> bool:
        """Has this day passed retention, so lifecycle may have removed it? ("" is never expired.)"""
        return bool(day) and lifecycle.expired(self.catalog, self.prefix, day, self.today, self.audit_days)

    def day_of(self, key: str) -> str:
        found = mf.day_file(self.prefix, key)
        return found[0] if found else ""

    def run(self, start: str, end: str, client) -> None:
        checks = ["manifests", "objects"] + (["checkpoints"] if self.kind == "audit" else []) + ["SHA256SUMS"]
        for what in checks + (["clickhouse"] if client is not None else []):
            self.report.counts[f"{self.kind} {what}"] = [0, 0]
        in_range = [k for k in self.blobs if start <= self.day_of(k) <= end]
        for key in sorted(in_range, key=lambda k: mf.manifest_seq(self.prefix, k)):
            self.check_manifest(key, client)
        for day in sorted(d for d in self.days if start <= d <= end):
            self.check_sums(day)
        self.check_missing_days(start, end)
        for key in self.unlisted:
            day = self.day_of(key)  # "" outside the day folders: always named
            if key not in self.moved_targets and (not day or start <= day <= end):
                self.find(f"{key}: in the store but listed by no manifest")
        self.check_state()

    def check_manifest(self, key: str, client) -> None:
        before = len(self.report.findings)
        if key in self.broken:
            self.find(self.broken[key])
            self.report.tally(f"{self.kind} manifests", before)
            return
        doc, seq, (day, _) = self.docs[key], mf.manifest_seq(self.prefix, key), mf.day_file(self.prefix, key)
        self.check_signature(key, doc)
        if (doc["kind"], doc["day"], doc["seq"]) != (self.kind, day, seq):
            self.find(f"{key}: its name or folder does not match its content (kind {doc['kind']}, day {doc['day']}, seq {doc['seq']})")
        for other in self.by_seq[seq]:
            if other != key:
                self.find(f"{key}: seq {seq} is also taken by {other} (the chain forks)")
        self.check_link(key, seq, doc.get("previous"))
        folder = mf.day_prefix(self.prefix, day)
        for entry in doc["objects"]:
            if not entry["key"].startswith(folder + "/"):
                self.find(f"{key}: lists {entry['key']}, outside its day folder")
        self.report.tally(f"{self.kind} manifests", before)
        leaves = []
        for entry in doc["objects"]:
            before = len(self.report.findings)
            raw = self.check_object(entry)
            self.report.tally(f"{self.kind} objects", before)
            if raw is not None and self.kind == "audit":
                leaves += [merkle.leaf_hash(line) for line in raw.splitlines()]
            if client is not None:
                self.check_clickhouse(client, entry)
        if self.kind == "audit":
            before = len(self.report.findings)
            self.check_checkpoint(key, seq, doc, leaves)
            self.report.tally(f"{self.kind} checkpoints", before)

    def check_signature(self, key: str, doc: dict) -> None:
        signer = doc.get("key_id")
        if signer not in self.trusted:
            hint = f" (keys/rollup-{signer}.pub in the store is informational, not a trust anchor)" if signer in self.store_key_ids else ""
            self.find(f"{key}: signed by key {signer}, which is not trusted{hint}")
        elif not mf.signature_ok(doc, self.trusted):
            self.find(f"{key}: signature invalid (altered after signing)")
        else:
            self.report.signers[signer] = self.report.signers.get(signer, 0) + 1

    def check_link(self, key: str, seq: int, previous) -> None:
        if seq == 1:
            if previous is not None:
                self.find(f"{key}: chain broken: the first manifest names a previous one ({previous})")
            return
        if not isinstance(previous, dict):
            self.find(f"{key}: chain broken: it names no previous manifest")
            return
        before = self.by_seq.get(seq - 1, [])
        if before:
            actual = {"key": before[0], "sha256": sha256_hex(self.blobs[before[0]])}
            if previous != actual:
                self.find(f"{key}: chain broken: it names {previous.get('key')} (SHA-256 {str(previous.get('sha256'))[:16]}...), "
                          f"the previous manifest is {actual['key']} ({actual['sha256'][:16]}...)")
        elif not self.expired(self.day_of(str(previous.get("key")))):
            self.find(f"{key}: chain broken: the previous manifest {previous.get('key')} is missing")

    def check_object(self, entry: dict) -> bytes | None:
        """Findings for one listed object; its uncompressed bytes when there are any to read."""
        key = entry["key"]
        try:
            stored = self.store.get(key)
        except KeyError:
            target = self.moved_to(entry["stored_sha256"])
            self.find(f"{key}: moved to {target}" if target else f"{key}: deleted")
            return None
        try:
            raw = decompress(stored, key)
        except Exception:  # noqa: BLE001 - corrupt compression is a modification
            raw = None
        digest = sha256_hex(stored)
        if digest != entry["stored_sha256"]:
            other = self.by_hash.get(digest)
            self.find(f"{key}: reordered: it holds the object listed as {other}" if other and other != key
                      else f"{key}: modified (stored bytes differ from the manifest)")
        elif raw is None:
            self.find(f"{key}: modified (cannot be decompressed)")
        elif sha256_hex(raw) != entry["sha256"] or len(raw.splitlines()) != entry["lines"]:
            self.find(f"{key}: modified (content differs from the manifest)")
        return raw

    def moved_to(self, digest: str) -> str | None:
        """The unlisted object holding these bytes, if any (the unlisted ones are hashed once)."""
        if self._unlisted_hashes is None:
            self._unlisted_hashes = {sha256_hex(self.store.get(k)): k for k in self.unlisted}
        target = self._unlisted_hashes.get(digest)
        if target:
            self.moved_targets.add(target)
        return target

    def checkpoint(self, manifest_key: str) -> dict | None:
        """The parsed checkpoint a manifest names, or None when it cannot be read."""
        if manifest_key not in self._checkpoints:
            try:
                self._checkpoints[manifest_key] = _checkpoint(self.store.get(self.docs[manifest_key]["checkpoint"]["key"]))
            except (KeyError, ValueError, TypeError):
                self._checkpoints[manifest_key] = None
        return self._checkpoints[manifest_key]

    def check_checkpoint(self, key: str, seq: int, doc: dict, leaves: list[bytes]) -> None:
        ref = doc.get("checkpoint")
        if not isinstance(ref, dict) or not {"key", "sha256"} <= ref.keys():
            self.find(f"{key}: names no Merkle checkpoint")
            return
        try:
            blob = self.store.get(ref["key"])
        except KeyError:
            self.find(f"{ref['key']}: checkpoint missing (named by {key})")
            return
        if sha256_hex(blob) != ref["sha256"]:
            self.find(f"{ref['key']}: modified (differs from the checkpoint {key} signs)")
        checkpoint = self.checkpoint(key)
        if checkpoint is None:
            self.find(f"{ref['key']}: not a valid checkpoint")
            return
        self.check_signature(ref["key"], checkpoint)
        if checkpoint["origin"] != origin(self.catalog):
            self.find(f"{ref['key']}: origin {checkpoint['origin']!r} is not this log's ({origin(self.catalog)!r})")
        base = checkpoint["base"]
        previous = self.by_seq.get(seq - 1, [])
        earlier = self.checkpoint(previous[0]) if previous and previous[0] in self.docs else None
        if earlier is not None and base != {"size": earlier["size"], "frontier": earlier["frontier"]}:
            self.find(f"{ref['key']}: does not continue the previous checkpoint of {previous[0]} (size {earlier['size']})")
        elif seq == 1 and base["size"] != 0:
            self.find(f"{ref['key']}: the first checkpoint does not start from an empty log")
        try:
            frontier = [bytes.fromhex(h) for h in base["frontier"]]
            proof = [bytes.fromhex(h) for h in checkpoint["consistency"]]
            new_root = bytes.fromhex(checkpoint["root"])
            tree = merkle.Tree(base["size"], frontier, leaves)
            old_root = merkle.Tree(base["size"], frontier, []).root()
        except (ValueError, TypeError) as exc:
            self.find(f"{ref['key']}: malformed hashes or frontier ({exc})")
            return
        if (tree.size, tree.root().hex(), [h.hex() for h in tree.frontier()]) != \
                (checkpoint["size"], checkpoint["root"], checkpoint["frontier"]):
            self.find(f"{ref['key']}: Merkle checkpoint does not match the records (history rewritten?)")
        if not merkle.verify_consistency(base["size"], checkpoint["size"], old_root, new_root, proof):
            self.find(f"{ref['key']}: the consistency proof from size {base['size']} fails")

    def check_sums(self, day: str) -> None:
        before = len(self.report.findings)
        folder = mf.day_prefix(self.prefix, day)
        key = f"{folder}/{mf.SUMS}"
        entries = [e for k, doc in self.docs.items() if self.day_of(k) == day for e in doc["objects"]]
        expected = mf.sha256sums(entries, folder)
        actual = self.store.get(key) if key in self.sums else None
        if actual is None:
            self.find(f"{key}: missing")
        elif actual != expected:
            want, have = _sums(expected), _sums(actual)
            for name in sorted(want.keys() | have.keys()):
                if name not in have:
                    self.find(f"{key}: does not list {name}")
                elif name not in want:
                    self.find(f"{key}: lists {name}, which no manifest lists")
                elif have[name] != want[name]:
                    self.find(f"{key}: the checksum of {name} differs from the manifest")
            if len(self.report.findings) == before:
                self.find(f"{key}: not the sha256sum file the manifests give")
        self.report.tally(f"{self.kind} SHA256SUMS", before)

    def check_missing_days(self, start: str, end: str) -> None:
        day, last = date.fromisoformat(start), min(date.fromisoformat(end), self.today - timedelta(days=1))
        while day <= last:
            text = day.isoformat()
            if text not in self.days and not self.expired(text):
                before = len(self.report.findings)
                self.find(f"{mf.day_prefix(self.prefix, text)}/: no manifest for {text} (a missing day)")
                self.report.tally(f"{self.kind} manifests", before)
            day += timedelta(days=1)

    def check_state(self) -> None:
        """The newest manifest the rollup recorded must still be there, unchanged."""
        name = mf.state_key(self.kind)
        try:
            state = json.loads(self.store.get(name))
        except KeyError:
            return  # an audit bundle, or a store the rollup never wrote to
        except ValueError as exc:
            self.find(f"{name}: not valid JSON ({exc})")
            return
        head = state.get("head") if isinstance(state, dict) else "?"
        if head is not None and (not isinstance(head, dict) or not {"key", "sha256"} <= head.keys()):
            self.find(f"{name}: not a chain state (no head key and SHA-256)")
        elif head and head["key"] not in self.blobs and not self.expired(self.day_of(head["key"])):
            self.find(f"{name}: the newest manifest {head['key']} is missing")
        elif head and head["key"] in self.blobs and sha256_hex(self.blobs[head["key"]]) != head["sha256"]:
            self.find(f"{name}: the newest manifest {head['key']} differs from the one the rollup wrote")

    def check_clickhouse(self, client, entry: dict) -> None:
        before = len(self.report.findings)
        db = self.catalog.storage.clickhouse_database
        table = names.LOGS_TABLE if self.kind == "logs" else names.TRAILS_TABLE
        try:
            rows = client.query(f"SELECT count() FROM {db}.{table} WHERE _file = %(f)s", parameters={"f": entry["key"]}).result_rows[0][0]
            bad = client.query(f"SELECT count() FROM {db}.{names.QUARANTINE_TABLE} WHERE file = %(f)s",
                               parameters={"f": entry["key"]}).result_rows[0][0]
        except Exception as exc:  # noqa: BLE001 - reported as a finding on this object
            self.find(f"{entry['key']}: ClickHouse check failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        else:
            if rows + bad != entry["lines"]:
                self.find(f"{entry['key']}: ClickHouse holds {rows} rows + {bad} quarantined, the manifest says {entry['lines']} lines")
        self.report.tally(f"{self.kind} clickhouse", before)


def _manifest(blob: bytes) -> dict:
    """A parsed manifest; ValueError when it is not JSON or lacks what verify reads."""
    doc = _fields(json.loads(blob), ("kind", "day", "seq", "objects"), "manifest")
    for entry in doc["objects"]:
        _fields(entry, ("key", "stored_sha256", "sha256", "lines"), "object entry")
    return doc


def _checkpoint(blob: bytes) -> dict:
    doc = _fields(json.loads(blob), ("origin", "size", "root", "frontier", "consistency", "base"), "checkpoint")
    _fields(doc["base"], ("size", "frontier"), "checkpoint base")
    return doc


def _fields(doc, required: tuple[str, ...], what: str) -> dict:
    if not isinstance(doc, dict) or any(name not in doc for name in required):
        raise ValueError(f"a {what} needs {', '.join(required)}")
    return doc


def _sums(blob: bytes) -> dict[str, str]:
    """`sha256sum` lines -> {path: hash}."""
    out = {}
    for line in blob.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        out[name] = digest
    return out


class RecordNotFound(LookupError):
    """No trail record has the id asked for."""


def inclusion(store, catalog: Catalog, record_id: str, trusted: dict[str, bytes]) -> dict:
    """Find a trail record and prove it is in the signed checkpoint written with it (leaf index = its
    global position in the log; the checkpoint's base frontier stands for every earlier leaf)."""
    prefix = catalog.storage.audit_prefix
    manifests = sorted((seq, key) for key in store.list(f"{prefix}/") if (seq := mf.manifest_seq(prefix, key)))
    for _, key in manifests:
        doc = _read(store, key, _manifest)
        leaves: list[bytes] = []
        found = None
        for entry in doc["objects"]:
            for line in decompress(_read(store, entry["key"], bytes), entry["key"]).splitlines():
                if found is None and record_id.encode() in line and _record_id(line) == record_id:
                    found = (entry["key"], len(leaves))
                leaves.append(merkle.leaf_hash(line))
        if found is None:
            continue
        ref = doc["checkpoint"]
        blob = _read(store, ref["key"], bytes)
        checkpoint = _read(store, ref["key"], _checkpoint)
        try:
            tree = merkle.Tree(checkpoint["base"]["size"], [bytes.fromhex(h) for h in checkpoint["base"]["frontier"]], leaves)
        except ValueError as exc:
            raise VerifyError(f"{ref['key']}: its base is not a Merkle frontier ({exc})") from None
        index = checkpoint["base"]["size"] + found[1]
        proof = tree.inclusion_proof(index)
        return {"record_id": record_id, "object": found[0], "manifest": key, "checkpoint": ref["key"],
                "leaf_index": index, "tree_size": checkpoint["size"], "root": checkpoint["root"],
                "audit_path": [h.hex() for h in proof],
                "verified": merkle.verify_inclusion(index, checkpoint["size"], leaves[found[1]], proof,
                                                    bytes.fromhex(checkpoint["root"])),
                "checkpoint_signed": mf.signature_ok(doc, trusted) and mf.signature_ok(checkpoint, trusted)
                and sha256_hex(blob) == ref["sha256"] and checkpoint["origin"] == origin(catalog),
                "key_id": checkpoint.get("key_id")}
    raise RecordNotFound(f"no trail record with id {record_id!r} in {store.url}")


def _read(store, key: str, parse):
    try:
        return parse(store.get(key))
    except KeyError:
        raise VerifyError(f"{key}: missing from the store") from None
    except (ValueError, TypeError) as exc:
        raise VerifyError(f"{key}: cannot be read ({exc})") from None


def _record_id(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a quarantined line that is not JSON
    return record.get("id") if isinstance(record, dict) else None
