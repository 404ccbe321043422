"""Core API: items on SQLite with per-operation timings, and per-tenant rate limits by bucket.

SQLite runs on one dedicated thread, never on the event loop: a WAL checkpoint's fsync would
otherwise stall every request in flight. `core_db_query_seconds` is the time a handler waits for
its query (the hand-off included); queries over SLOW_QUERY_MS are also counted and logged as slow.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, Field

from collectors import ApiError
from collectors.audit import slow
from collectors.context import current
from services.buckets import TokenBucket
from services.common import make_app
from vigia.model import Catalog

# Per-tenant core limits (tokens/s, burst) by bucket kind.
CORE_LIMITS = {"read": (200.0, 400.0), "write": (60.0, 120.0)}
SLOW_QUERY_MS = 50


class NewItem(BaseModel):
    kind: str = Field(pattern=r"^[a-z_]{1,32}$")
    size: int = Field(ge=0, le=10_000_000)


def open_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL,"
               " size INTEGER NOT NULL, created REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS items_tenant ON items (tenant, id)")
    return db


def create_app(catalog: Catalog, data_dir: Path, node: str = "n1", admin_token: str | None = None, clock=time.monotonic):
    app, obs = make_app(catalog, "core", data_dir, node, admin_token, "vigia core")
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    db = open_db(Path(data_dir) / "core.sqlite3")
    db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="core-db")  # one connection, one thread
    timers = {op: obs.metrics.labels("core_db_query_seconds", op=op) for op in catalog.label_sets["db_op"]}
    limits = {(t, b): TokenBucket(*CORE_LIMITS[b], clock=clock) for t in catalog.tenants for b in CORE_LIMITS}

    def run(sql: str, args: tuple) -> list[tuple]:
        return db.execute(sql, args).fetchall()

    async def query(op: str, sql: str, args: tuple = ()) -> list[tuple]:
        with slow(obs, f"core_db_{op}", SLOW_QUERY_MS):
            start = time.perf_counter()
            try:
                return await asyncio.get_running_loop().run_in_executor(db_thread, run, sql, args)
            finally:
                timers[op].observe(time.perf_counter() - start)

    def limit(bucket: str) -> str:
        """The request's tenant, once its bucket grants one token; RATE_LIMIT with the wait otherwise."""
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
        rows = await query("select", "SELECT id, kind, size FROM items WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                           (tenant, max(1, min(limit_n, 100))))
        return {"items": [{"id": r[0], "kind": r[1], "size": r[2]} for r in rows]}

    @app.post("/v1/items", status_code=201)
    async def create_item(item: NewItem):
        tenant = limit("write")
        rows = await query("insert", "INSERT INTO items (tenant, kind, size, created) VALUES (?, ?, ?, ?) RETURNING id",
                           (tenant, item.kind, item.size, time.time()))
        return {"id": rows[0][0]}

    @app.get("/v1/items/{item_id}")
    async def get_item(item_id: int):
        tenant = limit("read")
        rows = await query("select", "SELECT id, kind, size FROM items WHERE tenant = ? AND id = ?", (tenant, item_id))
        if not rows:
            raise ApiError("NOT_FOUND")
        return {"id": rows[0][0], "kind": rows[0][1], "size": rows[0][2]}

    async def db_answers() -> tuple[bool, str]:
        await asyncio.get_running_loop().run_in_executor(db_thread, run, "SELECT 1", ())
        return True, "sqlite ok"

    def optimize(stage: str) -> None:
        """Reload: refresh the query planner's statistics, on the DB thread (the answer does not wait)."""
        db_thread.submit(run, "PRAGMA optimize", ())

    def close() -> None:
        db_thread.shutdown(wait=True)
        db.close()

    obs.health.add_async_check("db", db_answers)
    obs.reload_hooks.append(optimize)
    app.router.on_shutdown.append(close)
    return app
