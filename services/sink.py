"""A receiver for Alertmanager notifications and webhook deliveries, recording each as NDJSON.

POST /alerts -> {out}/alerts.ndjson; POST /webhooks/{dest} -> {out}/webhooks.ndjson (only the
destination, size and time: payloads are not kept); GET /alerts returns the notifications.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_sink(out: Path, fail_dests: frozenset[str] = frozenset()) -> FastAPI:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def append(name: str, record: dict) -> None:
        fd = os.open(out / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")
        finally:
            os.close(fd)

    @app.post("/alerts")
    async def alerts(request: Request):
        body = await request.json()
        append("alerts.ndjson", {"received_at": time.time(), "notification": body})
        return {"ok": True}

    @app.get("/alerts")
    async def list_alerts():
        path = out / "alerts.ndjson"
        lines = path.read_text().splitlines() if path.exists() else []
        return JSONResponse([json.loads(line) for line in lines])

    @app.post("/webhooks/{dest}")
    async def webhook(dest: str, request: Request):
        size = len(await request.body())
        if dest in fail_dests:
            return JSONResponse({"ok": False}, status_code=503)
        append("webhooks.ndjson", {"received_at": time.time(), "dest": dest, "bytes": size})
        return {"ok": True}

    @app.get("/_health")
    async def health():
        return {"status": "ok"}

    return app
