"""`vigia bench rollup`: shipping and loading throughput, each against a baseline in the same run.

ship: compress + checksum + store (local folder) with zstd-3 vs the same pipeline with gzip-6.
load: raw NDJSON streamed as `INSERT ... FORMAT JSONEachRow` into chDB vs `json.loads` per line
      in Python and `client.insert` of the rows, on the same lines.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

import clickhouse_connect

from jobs.rollup import compress
from jobs.store import LocalStore
from vigia import conventions as names
from vigia.model import Catalog


def synthetic_lines(catalog: Catalog, count: int) -> bytes:
    routes = [r for c in catalog.components for r in c.route_templates]
    out = []
    for i in range(count):
        out.append(json.dumps({
            "ts": f"2026-11-21T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            "component": catalog.components[i % 4].name, "node": "n1", "tenant": catalog.tenants[i % 5],
            "route": routes[i % len(routes)], "method": "GET" if i % 3 else "POST", "ok": i % 50 != 0,
            "code": 500 if i % 50 == 0 else 200, "latency_ms": (i * 7919) % 300, "bytes_in": (i * 31) % 2048,
            "bytes_out": (i * 131) % 65536, "correlation_id": f"{i * 2654435761 % 2**64:016x}",
            "trace_id": f"{i * 40503 % 2**64:016x}{i:016x}"}, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def _ship(data: bytes, codec: str, store: LocalStore, chunk: int) -> float:
    start = time.perf_counter()
    for n, offset in enumerate(range(0, len(data), chunk)):
        part = data[offset:offset + chunk]
        hashlib.sha256(part).hexdigest()
        stored, suffix = compress(part, codec)
        hashlib.sha256(stored).hexdigest()
        store.put(f"bench/{codec}-{n:04d}.ndjson{suffix}", stored)
    return len(data) / (time.perf_counter() - start) / 1e6


def bench_rollup(catalog: Catalog, megabytes: int = 64, rows: int = 200_000, progress=print) -> dict:
    sample = synthetic_lines(catalog, 1000)
    data = synthetic_lines(catalog, megabytes * 1_000_000 * 1000 // len(sample))  # distinct lines, no repeats
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "store")
        gzip_mbps = _ship(data, "gzip", store, 8 << 20)
        progress(f"ship gzip-6 baseline: {gzip_mbps:.1f} MB/s")
        zstd_mbps = _ship(data, "zstd", store, 8 << 20)
        progress(f"ship zstd-3: {zstd_mbps:.1f} MB/s")

        lines = synthetic_lines(catalog, rows)
        client = clickhouse_connect.get_client(dsn=f"chdb://{Path(tmp) / 'ch'}")
        from infra import clickhouse
        for statement in clickhouse.statements(catalog, "local"):
            client.command(statement)
        table = f"{catalog.storage.clickhouse_database}.{names.LOGS_TABLE}"
        columns = list(catalog.logs.fields)
        start = time.perf_counter()
        client.raw_insert(table, column_names=columns, insert_block=lines, fmt="JSONEachRow")
        stream_rps = rows / (time.perf_counter() - start)
        progress(f"load streamed JSONEachRow: {stream_rps:,.0f} rows/s")
        client.command(f"TRUNCATE TABLE {table}")
        start = time.perf_counter()
        parsed = [json.loads(line) for line in lines.splitlines()]
        defaults = {c: ("" if kind in ("token", "route", "id") else None) for c, kind in catalog.logs.fields.items()}
        values = [[datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) if c == "ts" else r.get(c, defaults[c])
                   for c in columns] for r in parsed]
        client.insert(table, values, column_names=columns)
        python_rps = rows / (time.perf_counter() - start)
        progress(f"load json.loads + insert rows: {python_rps:,.0f} rows/s")
    return {"bench": "rollup", "megabytes": round(len(data) / 1e6, 1), "ship_zstd_mb_s": round(zstd_mbps, 1),
            "ship_gzip6_mb_s": round(gzip_mbps, 1), "ship_ratio": round(zstd_mbps / gzip_mbps, 2), "goal_ship_ratio_min": 3,
            "rows": rows, "load_stream_rows_s": round(stream_rps), "load_python_rows_s": round(python_rps),
            "load_ratio": round(stream_rps / python_rps, 2), "goal_load_ratio_min": 2.5, "goal_load_rows_s_min": 250_000}
