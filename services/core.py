"""Core API: items on SQLite with per-operation timings, and per-tenant rate limits by bucket."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from pydantic import BaseModel, Field

from collectors import ApiError
from collectors.context import current
from services.buckets import TokenBucket
from services.common import make_app
from vigia.model import Catalog

# Per-tenant core limits (tokens/s, burst) by bucket kind.
CORE_LIMITS = {"read": (200.0, 400.0), "write": (60.0, 120.0)}


class NewItem(BaseModel):
    kind: str = Field(pattern=r"^[a-z_]{1,32}$")
    size: int = Field(ge=0, le=10_000_000)


def create_app(catalog: Catalog, data_dir: Path, node: str = "n1", admin_token: str | None = None):
    app, obs = make_app(catalog, "core", data_dir, node, admin_token, "vigia core")
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(Path(data_dir) / "core.sqlite3", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL,"
               " size INTEGER NOT NULL, created REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS items_tenant ON items (tenant, id)")
    timers = {op: obs.metrics.labels("core_db_query_seconds", op=op) for op in catalog.label_sets["db_op"]}
    limits = {(t, b): TokenBucket(*CORE_LIMITS[b]) for t in catalog.tenants for b in CORE_LIMITS}

    def query(op: str, sql: str, args: tuple = ()) -> list[tuple]:
        start = time.perf_counter()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            timers[op].observe(time.perf_counter() - start)

    def limit(bucket: str) -> str:
        ctx = current()
        tenant = ctx.tenant if ctx else "other"
        bucket_state = limits.get((tenant, bucket))
        if bucket_state is None:
            raise ApiError("FORBIDDEN")
        wait = bucket_state.take()
        if wait:
            obs.metrics.labels("core_rate_limit_hits_total", bucket=bucket, tenant=tenant).inc()
            raise ApiError("RATE_LIMIT", retry_after_ms=wait)
        return tenant

    @app.get("/v1/items")
    async def list_items(limit_n: int = 20):
        tenant = limit("read")
        rows = query("select", "SELECT id, kind, size FROM items WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                     (tenant, max(1, min(limit_n, 100))))
        return {"items": [{"id": r[0], "kind": r[1], "size": r[2]} for r in rows]}

    @app.post("/v1/items", status_code=201)
    async def create_item(item: NewItem):
        tenant = limit("write")
        rows = query("insert", "INSERT INTO items (tenant, kind, size, created) VALUES (?, ?, ?, ?) RETURNING id",
                     (tenant, item.kind, item.size, time.time()))
        return {"id": rows[0][0]}

    @app.get("/v1/items/{item_id}")
    async def get_item(item_id: int):
        tenant = limit("read")
        rows = query("select", "SELECT id, kind, size FROM items WHERE tenant = ? AND id = ?", (tenant, item_id))
        if not rows:
            raise ApiError("NOT_FOUND")
        return {"id": rows[0][0], "kind": rows[0][1], "size": rows[0][2]}

    def db_ok() -> tuple[bool, str]:
        query("select", "SELECT 1")
        return True, "sqlite ok"

    obs.health.add_check("db", db_ok)
    app.router.on_shutdown.append(lambda: db.close())
    return app
