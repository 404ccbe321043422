"""Helpers shared by the loader's and the line rules' tests (both load through chDB): a chDB
client, a day's object as the manifest describes it, a log line as the logger writes it, a
query's rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import clickhouse_connect

from jobs import clickhouse_load as load

DAY = "2026-11-21"
LOGS_KEY = "logs/2026/11/21/gateway-n1-0000.ndjson.zst"
SECRETS = (b"alice@example.com", b"sk_live_abcdefghijklmnop", b"hunter2-secret", b"eyJhbGciOiJIUzI1.eyJzdWIiOiIx")


def client_at(path: Path):
    return clickhouse_connect.get_client(dsn=f"chdb://{path}")


def obj(key: str, data: bytes) -> load.LoadObject:
    return load.LoadObject(key, hashlib.sha256(data).hexdigest(), len(data.splitlines()), data)


def log_line(catalog, i: int = 0, **changes) -> bytes:
    record = {"ts": f"{DAY}T10:00:{i % 60:02d}.{i % 1000:03d}Z", "component": "gateway", "node": "n1",
              "tenant": catalog.tenants[i % len(catalog.tenants)], "route": "/v1/items", "method": "GET",
              "correlation_id": f"c{i:06d}", "ok": True, "code": 200, "latency_ms": 5 + i % 40}
    for key, value in changes.items():
        if value is ...:
            record.pop(key, None)
        else:
            record[key] = value
    return json.dumps(record, separators=(",", ":")).encode()


def one(client, sql: str, **parameters):
    return client.query(sql, parameters=parameters or None).result_rows
