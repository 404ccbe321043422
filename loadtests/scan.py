"""Privacy scan (seed 004 §11.4): search everything written for forbidden fields and leaking values.

Scanned: every NDJSON line under the spool (logs, trails, archive), every object in the store
(decompressed), every row of the ClickHouse database, and `/_metrics` pages. A finding is a key
from the catalog's forbidden list at any depth, or a value that looks like an e-mail, a JWT, a
bearer header, a private key or an API key. Ids, hashes and signatures are long hex strings by
design, so the long-blob rule of the logger does not apply here.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from collectors.logger import LEAKS
from jobs.rollup import decompress
from vigia.model import Catalog

VALUE_RULES = {name: pattern for name, pattern in LEAKS.items() if name != "blob"}


def _walk(value, forbidden: frozenset[str], where: str, findings: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in forbidden:
                findings.append(f"{where}: forbidden field {key!r}")
            _walk(item, forbidden, where, findings)
    elif isinstance(value, list):
        for item in value:
            _walk(item, forbidden, where, findings)
    elif isinstance(value, str):
        for name, pattern in VALUE_RULES.items():
            if pattern.search(value):
                findings.append(f"{where}: value looks like {name.replace('_', ' ')}")


def scan_lines(data: bytes, where: str, forbidden: frozenset[str], findings: list[str]) -> int:
    count = 0
    for number, line in enumerate(data.splitlines(), start=1):
        count += 1
        try:
            _walk(json.loads(line), forbidden, f"{where}:{number}", findings)
        except ValueError:
            _walk(line.decode("utf-8", "replace"), forbidden, f"{where}:{number}", findings)
    return count


def scan_all(catalog: Catalog, data: Path, clickhouse: str | None = None, metrics_urls: list[str] = ()) -> dict:
    forbidden = frozenset(catalog.logs.forbidden)
    findings: list[str] = []
    counts = {"files": 0, "lines": 0, "objects": 0, "rows": 0, "metrics_pages": 0}
    for path in sorted(Path(data).rglob("spool/**/*.ndjson")):
        counts["files"] += 1
        counts["lines"] += scan_lines(path.read_bytes(), str(path), forbidden, findings)
    for path in sorted(Path(data).rglob("store/**/*")):
        if path.is_file() and path.suffix in (".zst", ".gz", ".json", ".ndjson"):
            counts["objects"] += 1
            counts["lines"] += scan_lines(decompress(path.read_bytes(), path.name), str(path), forbidden, findings)
    if clickhouse:
        import clickhouse_connect
        client = clickhouse_connect.get_client(dsn=clickhouse)
        db = catalog.storage.clickhouse_database
        for (table,) in client.query(f"SHOW TABLES FROM {db}").result_rows:
            if table.endswith(("_staging", "_raw")):
                continue
            for (row,) in client.query(f"SELECT toJSONString(tuple(*)) FROM {db}.{table}").result_rows:
                counts["rows"] += 1
                _walk(json.loads(row), forbidden, f"clickhouse {db}.{table}", findings)
    for url in metrics_urls:
        counts["metrics_pages"] += 1
        for line in httpx.get(url, timeout=5).text.splitlines():
            if line.startswith("#") or "{" not in line:
                continue
            labels = line[line.index("{") + 1:line.rindex("}")]
            for pair in labels.split('",'):
                key, _, value = pair.partition("=")
                if key.strip() in forbidden:
                    findings.append(f"{url}: forbidden label {key.strip()!r}")
                _walk(value.strip('"'), forbidden, url, findings)
    return counts | {"findings": findings}
