"""`vigia bench rollup`: shipping and loading throughput, each against a baseline in the same run.

ship: compress + checksum + store (local folder) with zstd-3 vs the same pipeline with gzip-6.
load: the real load path (`clickhouse_load.load_day`: the raw lines streamed in as LineAsString,
      the catalog check in ClickHouse, the staging table, REPLACE PARTITION, the gold refresh and
      the ledger) vs `json.loads` of each line in Python and `client.insert` of the rows into the
      same staging table, then the same REPLACE PARTITION (no catalog check: the baseline is the
      cheapest Python path, so the ratio is conservative); a third figure adds the Python reference
      check (`line_rules.record_reason`, what a Python loader would have to run on every line).
      Same lines (valid for the catalog, one object per component), best of `repeat` runs each.
The machine's load moves these numbers; the ratios are measured in one run on the same data.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

import clickhouse_connect

from jobs import clickhouse_load, line_rules
from jobs.rollup import compress
from jobs.store import LocalStore
from vigia import conventions as names
from vigia.model import Catalog

DAY = "2026-11-21"


def synthetic_lines(catalog: Catalog, count: int, day: str = DAY) -> bytes:
    """`count` distinct log lines of one UTC day as the logger writes them, valid for the catalog:
    each component's own routes and methods, tools on tool routes, an ErrorToken on every error."""
    tools = list(catalog.label_sets.get("tool", ("tool",)))
    tenants, components = list(catalog.tenants), catalog.components
    step = 86_400_000 // max(count, 1)
    out = []
    for i in range(count):
        ms, component = i * step, components[i % len(components)]
        route = component.routes[(i // len(components)) % len(component.routes)]
        error = i % 50 == 0
        record = {"ts": f"{day}T{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}Z",
                  "component": component.name, "node": "n1", "tenant": tenants[i % len(tenants)], "route": route.path,
                  "method": route.methods[i % len(route.methods)]}
        if "{tool}" in route.path:
            record["tool"] = tools[i % len(tools)]
        record.update({"session_id": f"s{i % 977:04d}", "correlation_id": f"{i * 2654435761 % 2**64:016x}", "ok": not error})
        if error:
            record["err_token"] = "INTERNAL"
        record.update({"code": 500 if error else 200, "latency_ms": (i * 7919) % 300, "bytes_in": (i * 31) % 2048,
                       "bytes_out": (i * 131) % 65536, "trace_id": f"{i * 40503 % 2**64:016x}{i:016x}"})
        out.append(json.dumps(record, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def objects_of(catalog: Catalog, data: bytes) -> list[clickhouse_load.LoadObject]:
    """The lines split into one object per component, as the rollup ships them."""
    parts: dict[str, list[bytes]] = {}
    for line in data.splitlines():
        parts.setdefault(line[line.index(b'"component":"') + 13:].split(b'"', 1)[0].decode(), []).append(line)
    out = []
    for component, lines in sorted(parts.items()):
        raw = b"\n".join(lines) + b"\n"
        out.append(clickhouse_load.LoadObject(f"logs/{DAY.replace('-', '/')}/{component}-n1-0000.ndjson.zst",
                                              hashlib.sha256(raw).hexdigest(), len(lines), raw))
    return out


def _ship(data: bytes, codec: str, store: LocalStore, chunk: int) -> float:
    start = time.perf_counter()
    for n, offset in enumerate(range(0, len(data), chunk)):
        part = data[offset:offset + chunk]
        hashlib.sha256(part).hexdigest()
        stored, suffix = compress(part, codec)
        hashlib.sha256(stored).hexdigest()
        store.put(f"bench/{codec}-{n:04d}.ndjson{suffix}", stored)
    return len(data) / (time.perf_counter() - start) / 1e6


def _load_ours(client, catalog: Catalog, objects) -> float:
    client.command(f"TRUNCATE TABLE {catalog.storage.clickhouse_database}.{names.LEDGER_TABLE}")
    start = time.perf_counter()
    result = clickhouse_load.load_day(client, catalog, "logs", DAY, objects)
    elapsed = time.perf_counter() - start
    if result.quarantined or result.rows != sum(o.lines for o in objects):
        raise RuntimeError(f"bench: the load path kept {result.rows} rows and quarantined {result.quarantined}")
    return elapsed


def _load_python(client, catalog: Catalog, objects, check: bool) -> float:
    """json.loads each line, (optionally the reference check), insert the rows, replace the day."""
    table = f"{catalog.storage.clickhouse_database}.{names.LOGS_TABLE}"
    fields = catalog.logs.fields
    columns = [*fields, "_file", "_line"]
    defaults = {c: ("" if kind in ("token", "route", "id") else None) for c, kind in fields.items()}
    client.command(f"TRUNCATE TABLE {table}_staging")
    start = time.perf_counter()
    for obj in objects:
        rows = []
        for number, line in enumerate(obj.data.splitlines(), start=1):
            record = json.loads(line)
            if check and line_rules.record_reason(catalog, "logs", record, DAY):
                continue
            rows.append([datetime.fromisoformat(record["ts"].replace("Z", "+00:00")) if c == "ts" else record.get(c, defaults[c])
                         for c in fields] + [obj.key, number])
        client.insert(f"{table}_staging", rows, column_names=columns)
    clickhouse_load.replace_day(client, table, DAY)
    return time.perf_counter() - start


def bench_rollup(catalog: Catalog, megabytes: int = 64, rows: int = 200_000, progress=print, repeat: int = 3) -> dict:
    sample = synthetic_lines(catalog, 1000)
    data = synthetic_lines(catalog, megabytes * 1_000_000 * 1000 // len(sample))  # distinct lines, no repeats
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "store")
        gzip_mbps = _ship(data, "gzip", store, 8 << 20)
        progress(f"ship gzip-6 baseline: {gzip_mbps:.1f} MB/s")
        zstd_mbps = _ship(data, "zstd", store, 8 << 20)
        progress(f"ship zstd-3: {zstd_mbps:.1f} MB/s")

        objects = objects_of(catalog, synthetic_lines(catalog, rows))
        client = clickhouse_connect.get_client(dsn=f"chdb://{Path(tmp) / 'ch'}")
        clickhouse_load.ensure_schema(client, catalog)
        ours = min(_load_ours(client, catalog, objects) for _ in range(repeat))
        ours_rps = rows / ours
        progress(f"load path (LineAsString + catalog check in ClickHouse + staging + REPLACE PARTITION + gold): "
                 f"{ours_rps:,.0f} rows/s")
        python = min(_load_python(client, catalog, objects, check=False) for _ in range(repeat))
        python_rps = rows / python
        progress(f"baseline json.loads + insert rows + REPLACE PARTITION: {python_rps:,.0f} rows/s")
        checked_rps = rows / _load_python(client, catalog, objects, check=True)
        progress(f"baseline with the Python reference check per line: {checked_rps:,.0f} rows/s")
    return {"bench": "rollup", "megabytes": round(len(data) / 1e6, 1), "ship_zstd_mb_s": round(zstd_mbps, 1),
            "ship_gzip6_mb_s": round(gzip_mbps, 1), "ship_ratio": round(zstd_mbps / gzip_mbps, 2), "goal_ship_ratio_min": 3,
            "rows": rows, "load_objects": len(objects), "load_rows_s": round(ours_rps),
            "load_python_rows_s": round(python_rps), "load_python_checked_rows_s": round(checked_rps),
            "load_ratio": round(ours_rps / python_rps, 2), "load_ratio_vs_checked": round(ours_rps / checked_rps, 2),
            "goal_load_ratio_min": 2.5, "goal_load_rows_s_min": 250_000, "best_of": repeat}
