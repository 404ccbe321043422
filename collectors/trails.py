"""Audit trails in JSON✯Atomic form (seed 004 §3): canonical, chained, optionally signed.

Canonical bytes: keys in the order `id, ts, kind, scope, actor, refs, data, meta, sig`; nested
objects with sorted keys; no insignificant whitespace; UTF-8. `meta.prev` is the BLAKE3 hash of
the previous record in the same file ("" for the first), `meta.hash` the BLAKE3 hash of this
record's canonical bytes with `meta.hash` and `sig` empty; `sig` is an Ed25519 signature of that
hash (hex) when the tenant has a key, with `meta.key_id` naming the key.

Files: `{data_dir}/audit/yyyy/mm/dd/{component}-{node}.ndjson`. One writer process per file
(the chain needs to know the previous record); each record is one O_APPEND write.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from collectors.logger import utc_ms
from vigia import conventions as names
from vigia.model import Catalog

ORDER = ("id", "ts", "kind", "scope", "actor", "refs", "data", "meta", "sig")
ARG_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
ARG_VALUE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
VALUE_PATTERNS = {
    "token": re.compile(r"[A-Za-z0-9_.:\-]{1,64}"),
    "id": re.compile(r"[A-Za-z0-9_\-]{1,128}"),
    "route": re.compile(r"(/[A-Za-z0-9_.\-{}]*)+"),
}


class TrailError(ValueError):
    """A trail record the catalog does not allow."""


def canonical(record: dict) -> bytes:
    ordered = {key: record[key] for key in ORDER}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, sort_keys=False,
                      default=_reject).encode()


def _reject(value: object):
    raise TrailError(f"{type(value).__name__} is not JSON")


def _sorted(value: object) -> object:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def record_hash(record: dict) -> str:
    body = dict(record, meta=dict(record["meta"], hash=""), sig="")
    return blake3.blake3(canonical(body)).hexdigest()


def key_id(verify_key: VerifyKey) -> str:
    return blake3.blake3(bytes(verify_key)).hexdigest()[:16]


def check_args_min(value: object) -> dict:
    """Only ids, type names and non-negative counters: never free text."""
    if not isinstance(value, dict):
        raise TrailError("args_min must be an object of ids, types and counters")
    for key, item in value.items():
        if not ARG_KEY.fullmatch(key):
            raise TrailError(f"args_min key {key!r} is not an identifier")
        if isinstance(item, bool) or (isinstance(item, int) and item < 0):
            raise TrailError(f"args_min.{key}: counters are non-negative integers")
        if isinstance(item, str) and not ARG_VALUE.fullmatch(item):
            raise TrailError(f"args_min.{key}: only ids and type names, never free text")
        if not isinstance(item, (int, str)):
            raise TrailError(f"args_min.{key}: only ids, type names and counters")
    return _sorted(value)


def check_data(catalog: Catalog, kind: str, data: dict) -> dict:
    spec = catalog.trails.kinds.get(kind)
    if spec is None:
        raise TrailError(f"unknown trail kind {kind!r}")
    extra = sorted(set(data) - set(spec))
    if extra:
        raise TrailError(f"{kind}: data fields not in the catalog: {', '.join(extra)}")
    out = {}
    for field, value in data.items():
        ftype = spec[field]
        if ftype == "args_min":
            out[field] = check_args_min(value)
        elif ftype == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TrailError(f"{kind}.data.{field} must be an integer")
            out[field] = value
        elif ftype == "bool":
            if not isinstance(value, bool):
                raise TrailError(f"{kind}.data.{field} must be true or false")
            out[field] = value
        else:
            if not isinstance(value, str) or not VALUE_PATTERNS[ftype].fullmatch(value):
                raise TrailError(f"{kind}.data.{field} must be a {ftype}")
            out[field] = value
    return dict(sorted(out.items()))


def _check_ids(name: str, value: str) -> str:
    if not VALUE_PATTERNS["id"].fullmatch(value):
        raise TrailError(f"{name} must be an id (letters, digits, _ and -)")
    return value


def load_signing_keys(directory: Path | None) -> dict[str, SigningKey]:
    """`{tenant}.key` files holding a 32-byte Ed25519 seed in hex."""
    if directory is None or not Path(directory).is_dir():
        return {}
    keys = {}
    for path in sorted(Path(directory).glob("*.key")):
        keys[path.stem] = SigningKey(bytes.fromhex(path.read_text().strip()))
    return keys


class TrailWriter:
    def __init__(self, catalog: Catalog, component: str, node: str, data_dir: Path,
                 signing_keys: dict[str, SigningKey] | None = None, metrics=None, clock=time.time):
        self.catalog = catalog
        self.component, self.node = component, node
        self.root = Path(data_dir) / "audit"
        self.keys = signing_keys or {}
        self.metrics = metrics
        self.clock = clock
        self._fd: int | None = None
        self._day = ""
        self._prev = ""

    def append(self, kind: str, *, scope: str, actor: str, refs: tuple[str, ...] | list[str] = (),
               data: dict, tenant: str | None = None) -> dict:
        now = self.clock()
        record = {
            "id": f"{int(now * 1000):013x}{os.urandom(6).hex()}",
            "ts": utc_ms(now),
            "kind": kind,
            "scope": _check_ids("scope", scope),
            "actor": _check_ids("actor", actor),
            "refs": [_check_ids("refs[]", r) for r in refs],
            "data": check_data(self.catalog, kind, data),
            "meta": {},
            "sig": "",
        }
        fd = self._file(now)
        key = self.keys.get(tenant) if tenant else None
        meta = {"hash": "", "prev": self._prev}
        if key is not None:
            meta["key_id"] = key_id(key.verify_key)
        record["meta"] = dict(sorted(meta.items()))
        digest = record_hash(record)
        record["meta"]["hash"] = digest
        if key is not None:
            record["sig"] = key.sign(bytes.fromhex(digest)).signature.hex()
        os.write(fd, canonical(record) + b"\n")
        self._prev = digest
        if self.metrics is not None:
            self.metrics.labels(names.TRAIL_WRITTEN_METRIC, kind=kind).inc()
        return record

    def _file(self, now: float) -> int:
        day = time.strftime("%Y/%m/%d", time.gmtime(now))
        if day != self._day:
            self.close()
            path = self.root / day / f"{self.component}-{self.node}.ndjson"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._prev = _last_hash(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._day = day
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd, self._day = None, ""


def _last_hash(path: Path) -> str:
    """Continue the chain of a file a previous process wrote."""
    if not path.exists() or path.stat().st_size == 0:
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 65536))
        last = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return json.loads(last)["meta"]["hash"]


@dataclass(frozen=True)
class Finding:
    line: int
    record_id: str
    problem: str  # modified | bad_signature | unknown_key | inserted | deleted | reordered | unreadable

    def __str__(self) -> str:
        return f"line {self.line} ({self.record_id or '?'}): {self.problem}"


def verify_file(path: Path, public_keys: dict[str, bytes] | None = None) -> list[Finding]:
    """Every tampering the chain and signatures reveal, each naming its line and record id."""
    public_keys = public_keys or {}
    records: list[dict | None] = []
    findings: list[Finding] = []
    lines = Path(path).read_bytes().splitlines()
    for number, raw in enumerate(lines, start=1):
        try:
            records.append(json.loads(raw))
        except ValueError:
            records.append(None)
            findings.append(Finding(number, "", "unreadable"))
    hashes = [r["meta"].get("hash", "") if r else "" for r in records]
    position = {h: i for i, h in enumerate(hashes) if h}
    for i, record in enumerate(records):
        if record is None:
            continue
        number, rid = i + 1, record.get("id", "")
        if record_hash(record) != record["meta"].get("hash") or canonical(record) != lines[i]:
            findings.append(Finding(number, rid, "modified"))
            continue
        if record["meta"].get("key_id"):
            key = public_keys.get(record["meta"]["key_id"])
            if key is None:
                findings.append(Finding(number, rid, "unknown_key"))
            else:
                try:
                    VerifyKey(key).verify(bytes.fromhex(record["meta"]["hash"]), bytes.fromhex(record["sig"]))
                except (BadSignatureError, ValueError):
                    findings.append(Finding(number, rid, "bad_signature"))
        prev = record["meta"].get("prev", "")
        expected = hashes[i - 1] if i else ""
        if prev == expected:
            continue
        if prev in position and position[prev] != i - 1:
            findings.append(Finding(number, rid, "reordered"))
        elif i >= 1 and records[i - 1] and prev == records[i - 1]["meta"].get("prev"):
            findings.append(Finding(i, records[i - 1].get("id", ""), "inserted"))
        else:
            findings.append(Finding(number, rid, "deleted"))
    return findings

