"""Audit trails in JSON✯Atomic form (seed 004 §3): canonical, chained, optionally signed.

Canonical bytes: keys in the order `id, ts, kind, scope, actor, refs, data, meta, sig`; nested
objects with sorted keys; no insignificant whitespace; UTF-8. `meta` holds `seq` (the record's line
number in its file), `prev` (the BLAKE3 hash of the previous record, "" for the first), `hash`
(BLAKE3 of this record's canonical bytes with `meta.hash` and `sig` empty) and, for a record of a
tenant, `tenant`; `sig` is an Ed25519 signature of the hash when the tenant has a key, with
`meta.key_id` naming the key.

What a record may carry: scope, actor, refs and tenant are ids; `data` has exactly the fields the
catalog declares for the kind, each of its type; `args_min` holds only ids, type names and
non-negative counters under identifier keys. Every string passes the logger's rules (`check_value`:
pattern, length, no e-mail, JWT, bearer, key or blob shapes) and no key is a forbidden name of the
catalog. A record that breaks a rule raises TrailError and nothing is written.

Files: `{data_dir}/audit/yyyy/mm/dd/{component}-{node}.ndjson`. A writer only appends to a file it
created (a restart, or a second process, takes the next free `{component}-{node}.N.ndjson`), so one
chain is never continued by a process that could not vouch for its end. Each record is one O_APPEND
write. Next to the file, `<file>.head` holds `{"count":N,"last":"<hash>"}`, the end of the chain,
so that removing the last records shows. It is rewritten in place after each record: one pwrite
of under 100 bytes at offset 0 whose content only grows, so a crash leaves the old or the new head
(a write-and-rename per record would cost ten appends). A crash between the record and its head
leaves the last record beyond the head, and the verifier names it. The head is not signed: it
catches a truncation, not an attacker who also rewrites it; once shipped, the rollup's signed
manifest (its `lines`) is the anchor to verify against.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from collectors.logger import check_value, utc_ms
from vigia import conventions as names
from vigia.model import Catalog

ORDER = ("id", "ts", "kind", "scope", "actor", "refs", "data", "meta", "sig")
ARG_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
ARG_VALUE_MAX = 64
ACCEPTED_LIMIT = 8192  # distinct strings whose acceptance is remembered
WHAT = {"id": "an id", "token": "a token", "route": "a route template", "int": "an integer", "bool": "true or false"}


class TrailError(ValueError):
    """A record the catalog does not allow. The message names kind and field, never the value."""


def canonical(record: dict) -> bytes:
    ordered = {key: record[key] for key in ORDER}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, sort_keys=False).encode()


def record_hash(record: dict) -> str:
    body = dict(record, meta=dict(record["meta"], hash=""), sig="")
    return blake3.blake3(canonical(body)).hexdigest()


def key_id(verify_key: VerifyKey) -> str:
    return blake3.blake3(bytes(verify_key)).hexdigest()[:16]


class Rules:
    """The catalog's rules for every key and string of a record, set up once per writer."""

    def __init__(self, catalog: Catalog):
        self.forbidden = frozenset(catalog.logs.forbidden)
        self.max_len = catalog.logs.max_value_length
        self.kinds: dict[str, tuple[frozenset[str], tuple[tuple[str, str, str], ...]]] = {}
        for kind, fields in catalog.trails.kinds.items():
            clash = sorted(self.forbidden & set(fields))
            if clash:
                raise TrailError(f"catalog: trail kind {kind} declares forbidden data fields: {', '.join(clash)}")
            self.kinds[kind] = (frozenset(fields), tuple((f, fields[f], f"data.{f}") for f in sorted(fields)))
        # Only accepted strings are remembered, so no rejected secret stays in memory.
        self._accepted: set[tuple[str, int, str]] = set()
        self._accepted_keys: set[str] = set()

    def _reason(self, ftype: str, value: object, max_len: int) -> str | None:
        if value.__class__ is str and (ftype, max_len, value) in self._accepted:
            return None
        reason = check_value(ftype, value, max_len)
        if reason is None and value.__class__ is str and len(self._accepted) < ACCEPTED_LIMIT:
            self._accepted.add((ftype, max_len, value))
        return reason

    def value(self, kind: str, where: str, ftype: str, value: object) -> object:
        reason = self._reason(ftype, value, self.max_len)
        if reason is not None:
            raise TrailError(f"{kind}: {where} must be {WHAT[ftype]} ({reason})")
        return value

    def refs(self, kind: str, refs: object) -> list:
        if not isinstance(refs, (list, tuple)):
            raise TrailError(f"{kind}: refs must be a list of ids")
        return [self.value(kind, "refs[]", "id", ref) for ref in refs]

    def data(self, kind: str, data: object) -> dict:
        """Exactly the catalog's fields for the kind, each of its type, in sorted order."""
        spec = self.kinds.get(kind)
        if spec is None:
            raise TrailError("trail kind is not in the catalog (trails.kinds)")
        declared, fields = spec
        if not isinstance(data, dict):
            raise TrailError(f"{kind}: data must be an object")
        if data.keys() != declared:
            missing = sorted(declared - data.keys())
            if missing:
                raise TrailError(f"{kind}: data.{missing[0]} is missing")
            raise TrailError(f"{kind}: data has fields the catalog does not declare; it takes {', '.join(sorted(declared))}")
        return {field: self.args_min(kind, where, data[field]) if ftype == "args_min"
                else self.value(kind, where, ftype, data[field]) for field, ftype, where in fields}

    def args_min(self, kind: str, where: str, args: object) -> dict:
        """Ids, type names and non-negative counters under identifier keys: never free text or secrets."""
        if not isinstance(args, dict):
            raise TrailError(f"{kind}: {where} must be an object of ids, type names and counters")
        for key, item in args.items():
            if key not in self._accepted_keys:
                self._check_key(kind, where, key)
            if item.__class__ is int:
                if item < 0:
                    raise TrailError(f"{kind}: {where}.{key} must be a non-negative counter")
            else:
                reason = self._reason("token", item, ARG_VALUE_MAX)
                if reason is not None:
                    raise TrailError(f"{kind}: {where}.{key} must be an id, a type name or a counter ({reason})")
        return dict(sorted(args.items()))

    def _check_key(self, kind: str, where: str, key: object) -> None:
        if key.__class__ is not str or not ARG_KEY.fullmatch(key):
            raise TrailError(f"{kind}: {where} has a key that is not an identifier (a-z, 0-9, _; at most 32)")
        if key in self.forbidden:
            raise TrailError(f"{kind}: {where} has a key that is a forbidden name")
        reason = check_value("id", key, 32)
        if reason is not None:
            raise TrailError(f"{kind}: {where} has a key shaped like a secret ({reason})")
        if len(self._accepted_keys) < ACCEPTED_LIMIT:
            self._accepted_keys.add(key)


def load_signing_keys(directory: Path | None) -> dict[str, SigningKey]:
    """`{tenant}.key` files holding a 32-byte Ed25519 seed in hex."""
    if directory is None or not Path(directory).is_dir():
        return {}
    keys = {}
    for path in sorted(Path(directory).glob("*.key")):
        keys[path.stem] = SigningKey(bytes.fromhex(path.read_text().strip()))
    return keys


def head_path(path: Path) -> Path:
    return Path(f"{path}.head")


def _head_line(count: int, last: str) -> bytes:
    return b'{"count":%d,"last":"%s"}\n' % (count, last.encode())


class TrailWriter:
    def __init__(self, catalog: Catalog, component: str, node: str, data_dir: Path,
                 signing_keys: dict[str, SigningKey] | None = None, metrics=None, clock=time.time):
        self.rules = Rules(catalog)
        self.component, self.node = component, node
        self.root = Path(data_dir) / "audit"
        self.signers = {tenant: (key, key_id(key.verify_key)) for tenant, key in (signing_keys or {}).items()}
        self.metrics = metrics
        self.clock = clock
        self.path: Path | None = None  # the file being written
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._day = -1  # UTC day number of the open file
        self._seq = 0
        self._prev = ""
        self._lock = threading.Lock()  # one chain: appends from several threads must not interleave

    def append(self, kind: str, *, scope: str, actor: str, refs: tuple[str, ...] | list[str] = (),
               data: dict, tenant: str | None = None) -> dict:
        """Check, chain, sign and write one record; TrailError, and nothing written, if a rule is broken."""
        rules = self.rules
        checked = rules.data(kind, data)  # first: it also checks the kind
        record = {"id": "", "ts": "", "kind": kind, "scope": rules.value(kind, "scope", "id", scope),
                  "actor": rules.value(kind, "actor", "id", actor), "refs": rules.refs(kind, refs),
                  "data": checked, "meta": {}, "sig": ""}
        meta: dict = {"hash": ""}
        signer = None
        if tenant is not None:
            meta["tenant"] = rules.value(kind, "tenant", "id", tenant)
            signer = self.signers.get(tenant)
            if signer is not None:
                meta["key_id"] = signer[1]
        with self._lock:
            now = self.clock()
            fd = self._open(now)
            record["id"] = f"{int(now * 1000):013x}{os.urandom(6).hex()}"
            record["ts"] = utc_ms(now)
            meta["prev"], meta["seq"] = self._prev, self._seq + 1
            record["meta"] = dict(sorted(meta.items()))
            digest = record_hash(record)
            record["meta"]["hash"] = digest
            if signer is not None:
                record["sig"] = signer[0].sign(bytes.fromhex(digest)).signature.hex()
            os.write(fd, canonical(record) + b"\n")
            self._prev, self._seq = digest, self._seq + 1
            os.pwrite(self._head_fd, _head_line(self._seq, digest), 0)
        if self.metrics is not None:
            self.metrics.labels(names.TRAIL_WRITTEN_METRIC, kind=kind).inc()
        return record

    def _open(self, now: float) -> int:
        day = int(now // 86400)
        if day != self._day:
            self._close()
            folder = self.root / time.strftime("%Y/%m/%d", time.gmtime(now))
            folder.mkdir(parents=True, exist_ok=True)
            self.path, self._fd = _create(folder, f"{self.component}-{self.node}")
            self._head_fd = os.open(head_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            os.write(self._head_fd, _head_line(0, ""))
            self._day, self._seq, self._prev = day, 0, ""
        return self._fd

    def close(self) -> None:
        """Fsync and close the file and its head; a later append starts a new file."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        for fd in (self._fd, self._head_fd):
            if fd is not None:
                os.fsync(fd)
                os.close(fd)
        self._fd = self._head_fd = None
        self._day = -1


def _create(folder: Path, stem: str) -> tuple[Path, int]:
    """This writer's own file: the first of `stem.ndjson`, `stem.1.ndjson`, ... not there yet."""
    for n in itertools.count():
        path = folder / (f"{stem}.ndjson" if n == 0 else f"{stem}.{n}.ndjson")
        try:
            return path, os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            continue


# ---- verification ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Head:
    """Where a chain must end: its record count and, when known, the hash of its last record."""
    count: int
    last: str | None = None


def read_head(path: Path) -> Head | None:
    """The head the writer keeps next to a trail file; None when it is missing or unreadable."""
    try:
        doc = json.loads(head_path(path).read_bytes())
        return Head(int(doc["count"]), str(doc["last"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Finding:
    line: int  # 0: the file as a whole; one past the last line: records missing at the end
    record_id: str
    problem: str  # modified | inserted | deleted | reordered | unsigned | bad_signature | unknown_key | unreadable | no_head

    def __str__(self) -> str:
        return f"line {self.line} ({self.record_id or '?'}): {self.problem}"


def verify_file(path: Path, public_keys: dict[str, bytes] | None = None, signed_tenants: Iterable[str] = (),
                head: Head | None = None) -> list[Finding]:
    """Every tampering of a trail file; its end is checked against `head`, by default its `.head` file."""
    lines = Path(path).read_bytes().splitlines()
    if head is None:
        head = read_head(path)
        if head is None:
            return [Finding(0, "", "no_head"), *verify_lines(lines, public_keys, signed_tenants)]
    return verify_lines(lines, public_keys, signed_tenants, head)


def verify_lines(lines: list[bytes], public_keys: dict[str, bytes] | None = None, signed_tenants: Iterable[str] = (),
                 head: Head | None = None) -> list[Finding]:
    """Every tampering of one file's records, each naming its line and record id, in line order.

    `public_keys` maps key ids to raw Ed25519 public keys; records of `signed_tenants` must be
    signed. `head` (e.g. `Head(count=lines)` from a rollup manifest) anchors the end; without it a
    removal of the last records cannot show.
    """
    keys = {kid: VerifyKey(raw) for kid, raw in (public_keys or {}).items()}
    must_sign = frozenset(signed_tenants)
    findings: list[Finding] = []
    readable: list[tuple[int, dict]] = []
    unreadable: set[int] = set()
    for number, raw in enumerate(lines, start=1):
        record = _parse(raw)
        if record is None:
            unreadable.add(number)
            findings.append(Finding(number, "", "unreadable"))
            continue
        if record["meta"]["hash"] != record_hash(record) or canonical(record) != raw:
            findings.append(Finding(number, record["id"], "modified"))
        problem = _signature_problem(record, keys, must_sign)
        if problem:
            findings.append(Finding(number, record["id"], problem))
        readable.append((number, record))
    findings += _chain_findings(readable, head, len(lines), unreadable)
    return sorted(dict.fromkeys(findings), key=lambda f: (f.line, f.problem))


def _parse(raw: bytes) -> dict | None:
    """A record whose fields the verifier reads have their types; None for anything else."""
    try:
        record = json.loads(raw)
        meta = record["meta"]
        strings = (record["id"], record["sig"], meta["hash"], meta["prev"], meta.get("tenant", ""), meta.get("key_id", ""))
        if list(record) == list(ORDER) and meta["seq"].__class__ is int and all(s.__class__ is str for s in strings):
            return record
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _signature_problem(record: dict, keys: dict[str, VerifyKey], must_sign: frozenset[str]) -> str | None:
    meta = record["meta"]
    if "key_id" not in meta and not record["sig"]:
        return "unsigned" if meta.get("tenant") in must_sign else None
    key = keys.get(meta.get("key_id"))
    if key is None:
        return "unknown_key"
    try:
        key.verify(bytes.fromhex(meta["hash"]), bytes.fromhex(record["sig"]))
    except (BadSignatureError, ValueError, TypeError):
        return "bad_signature"
    return None


def _chain_findings(readable: list[tuple[int, dict]], head: Head | None, line_count: int,
                    unreadable: set[int]) -> list[Finding]:
    """Explain the chain's breaks by `meta.seq` and `meta.prev`.

    inserted: a copy of an earlier record, a seq outside 1..head.count, or of two records claiming
    one seq the one the chain does not go on from. reordered: a record whose seq is out of order
    with another's. deleted: a record whose predecessor's seq is missing (or the head's count is
    not reached). modified: a record whose successor's `prev` is not its hash (it was rewritten
    with a new hash). A gap that an unreadable line explains is not reported again.
    """
    findings = []
    follows = {record["meta"]["prev"] for _, record in readable}
    seen: set[str] = set()
    claims: dict[int, list[tuple[int, dict]]] = {}
    for number, record in readable:
        meta = record["meta"]
        if meta["hash"] in seen or meta["seq"] < 1 or (head is not None and meta["seq"] > head.count):
            findings.append(Finding(number, record["id"], "inserted"))
            continue
        seen.add(meta["hash"])
        claims.setdefault(meta["seq"], []).append((number, record))

    def continued(entry: tuple[int, dict]) -> bool:
        digest = entry[1]["meta"]["hash"]
        return digest in follows or (head is not None and digest == head.last)

    by_seq: dict[int, tuple[int, dict]] = {}
    for seq, group in claims.items():
        by_seq[seq] = next((entry for entry in group if continued(entry)), group[0])
        findings += [Finding(entry[0], entry[1]["id"], "inserted") for entry in group if entry is not by_seq[seq]]

    chain = sorted(by_seq.values(), key=lambda entry: entry[0])
    seqs = [record["meta"]["seq"] for _, record in chain]
    lowest_after = list(itertools.accumulate(reversed(seqs), min))[::-1][1:] + [float("inf")]
    highest_before = 0
    for (number, record), seq, after in zip(chain, seqs, lowest_after):
        if highest_before > seq or after < seq:
            findings.append(Finding(number, record["id"], "reordered"))
        highest_before = max(highest_before, seq)

    for number, record in chain:
        seq, prev = record["meta"]["seq"], record["meta"]["prev"]
        before = by_seq.get(seq - 1)
        if seq > 1 and before is None:
            if number - 1 not in unreadable:
                findings.append(Finding(number, record["id"], "deleted"))
        elif prev != (before[1]["meta"]["hash"] if before else ""):
            rewritten = before or (number, record)  # the first record's `prev` must be ""
            findings.append(Finding(rewritten[0], rewritten[1]["id"], "modified"))

    if head is not None:
        end = by_seq.get(head.count)
        if head.count and end is None:
            if line_count not in unreadable:
                findings.append(Finding(line_count + 1, "", "deleted"))
        elif end is not None and head.last is not None and end[1]["meta"]["hash"] != head.last:
            findings.append(Finding(end[0], end[1]["id"], "modified"))
    return findings
