"""`vigia export-audit`: a .tar.gz an external auditor verifies offline with `vigia verify --bundle`.

It holds every file of the audit day folders in range (trail objects, manifests, checkpoints,
SHA256SUMS), the manifest and checkpoint each of them is chained to when that one lies outside the
range (so every link and every checkpoint's base verify), the rollup's public keys (informational:
the auditor verifies against a key obtained separately), and `bundle.json` naming the days and the
SHA-256 of every member.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

from jobs import manifest as mf
from jobs.store import LocalStore
from jobs.verify import Report, verify
from vigia.model import Catalog

INDEX = "bundle.json"


def bundle(store, catalog: Catalog, start: str, end: str) -> bytes:
    prefix = catalog.storage.audit_prefix
    keys = store.list(f"{prefix}/")
    members = {k for k in keys if (found := mf.day_file(prefix, k)) and start <= found[0] <= end}
    by_seq = {seq: k for k in keys if (seq := mf.manifest_seq(prefix, k))}
    for key in [k for k in members if mf.manifest_seq(prefix, k)]:
        previous = by_seq.get(mf.manifest_seq(prefix, key) - 1)
        if previous and previous not in members:
            members.add(previous)
            checkpoint = json.loads(store.get(previous)).get("checkpoint")
            if checkpoint and store.exists(checkpoint["key"]):
                members.add(checkpoint["key"])
    members |= set(store.list("keys/"))
    out = io.BytesIO()
    index = {"from": start, "to": end, "files": {}}
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for key in sorted(members):
            data = store.get(key)
            index["files"][key] = hashlib.sha256(data).hexdigest()
            _add(tar, key, data)
        _add(tar, INDEX, json.dumps(index, sort_keys=True, indent=1).encode())
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def verify_bundle(path: Path, catalog: Catalog, trusted: dict[str, bytes], audit_days: int | None = None) -> tuple[Report, dict]:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(path, "r:gz") as tar:
        tar.extractall(tmp, filter="data")
        index = json.loads((Path(tmp) / INDEX).read_text())
        store = LocalStore(tmp)
        report = verify(store, catalog, index["from"], index["to"], trusted, audit_days=audit_days, kinds=("audit",),
                        allowed=(INDEX,))
        for key, digest in index["files"].items():
            if not store.exists(key):
                report.findings.append(f"{key}: listed in {INDEX} but missing")
            elif hashlib.sha256(store.get(key)).hexdigest() != digest:
                report.findings.append(f"{key}: differs from {INDEX}")
        return report, index
