"""`vigia export-audit`: a .tar.gz an external auditor verifies offline with `vigia verify --bundle`.

It holds the trail objects of the chosen days, every audit manifest, SHA256SUMS and leaf-hash file
up to the last day (so the manifest chain and the Merkle checkpoints verify from the start), the
rollup's public keys, and `bundle.json` naming the days and the SHA-256 of every member.
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


def _day(key: str) -> str:
    return "-".join(key.split("/")[1:4])


def bundle(store, catalog: Catalog, start: str, end: str) -> bytes:
    prefix = catalog.storage.audit_prefix
    members = []
    for key in store.list(f"{prefix}/"):
        side = key.rsplit("/", 1)[-1] in (mf.MANIFEST, mf.SUMS, mf.LEAVES)
        if (side and _day(key) <= end) or (not side and start <= _day(key) <= end):
            members.append(key)
    members += [k for k in store.list("keys/")]
    out = io.BytesIO()
    index = {"from": start, "to": end, "files": {}}
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for key in sorted(members):
            data = store.get(key)
            index["files"][key] = hashlib.sha256(data).hexdigest()
            _add(tar, key, data)
        _add(tar, "bundle.json", json.dumps(index, sort_keys=True, indent=1).encode())
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def verify_bundle(path: Path, catalog: Catalog) -> tuple[Report, dict]:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(path, "r:gz") as tar:
        tar.extractall(tmp, filter="data")
        index = json.loads((Path(tmp) / "bundle.json").read_text())
        store = LocalStore(tmp)
        report = verify(store, catalog, index["from"], index["to"])
        for key, digest in index["files"].items():
            if not store.exists(key):
                report.findings.append(f"{key}: listed in bundle.json but missing")
            elif hashlib.sha256(store.get(key)).hexdigest() != digest:
                report.findings.append(f"{key}: differs from bundle.json")
        return report, index
