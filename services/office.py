"""Office room: MCP-style tool calls and a WebSocket event stream that replays what a client missed.

Every tool call asks policy (bucket `tool`); BACKPRESSURE and RATE_LIMIT come back as ErrorTokens
with policy's `retry_after_ms`. A call carrying `session_id` publishes an event to that session.
A client that reconnects to `/v1/sessions/{id}/events?last_event_id=N` first receives every event
after N still in the session's buffer (the last 100), then live events.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from pathlib import Path

import httpx
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from collectors import ApiError
from collectors.context import current
from services.common import downstream_headers, make_app, peer_urls, reachable
from vigia.model import Catalog

REPLAY = 100


class ToolCall(BaseModel):
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    items: int = Field(default=1, ge=0, le=1000)


class Session:
    def __init__(self):
        self.events: deque[dict] = deque(maxlen=REPLAY)
        self.next_id = 1
        self.listeners: set[asyncio.Queue] = set()

    def publish(self, payload: dict) -> dict:
        event = {"id": self.next_id, **payload}
        self.next_id += 1
        self.events.append(event)
        for queue in self.listeners:
            queue.put_nowait(event)
        return event

    def after(self, last_id: int) -> list[dict]:
        return [e for e in self.events if e["id"] > last_id]


def create_app(catalog: Catalog, data_dir: Path, node: str = "n1", admin_token: str | None = None,
               peers: dict[str, str] | None = None):
    app, obs = make_app(catalog, "office", data_dir, node, admin_token, "vigia office")
    policy_url = peer_urls(catalog, peers)["policy"]
    tools = set(catalog.label_sets["tool"])
    sessions: dict[str, Session] = {}
    reconnects = obs.metrics.labels("office_ws_reconnect_duration_seconds")
    replayed = obs.metrics.labels("office_ws_replayed_events_total")

    def calls(tool: str, ok: bool, err: str = ""):
        obs.metrics.labels("office_mcp_call_total", tool=tool, ok="true" if ok else "false", err=err).inc()

    async def ask_policy(tenant: str) -> None:
        try:
            r = await app.state.http.post(f"{policy_url}/v1/eval", json={"tenant": tenant, "bucket": "tool", "cost": 1},
                                          headers=downstream_headers(tenant))
            r.raise_for_status()
        except httpx.HTTPError:
            raise ApiError("UPSTREAM_UNAVAILABLE") from None
        answer = r.json()
        decision = answer["decision"]
        if decision == "backpressure":
            raise ApiError("BACKPRESSURE", retry_after_ms=answer["retry_after_ms"])
        if decision == "rate_limit":
            raise ApiError("RATE_LIMIT", retry_after_ms=answer["retry_after_ms"])
        if decision == "deny":
            raise ApiError("FORBIDDEN")

    @app.post("/v1/tools/{tool}")
    async def call_tool(tool: str, body: ToolCall):
        if tool not in tools:
            raise ApiError("NOT_FOUND")
        ctx = current()
        tenant = ctx.tenant if ctx else catalog.tenants[0]
        start = time.perf_counter()
        try:
            await ask_policy(tenant)
            # The tool's work: a digest over its input size, cheap and real.
            digest = hashlib.blake2b(str(body.items).encode() * max(body.items, 1), digest_size=8).hexdigest()
        except ApiError as error:
            calls(tool, False, error.token)
            raise
        finally:
            obs.metrics.labels("office_mcp_call_duration_seconds", tool=tool).observe(time.perf_counter() - start)
        calls(tool, True)
        obs.trails.append("office.tool_call", scope="office", actor=tenant, tenant=tenant,
                          refs=[ctx.correlation_id] if ctx else [],
                          data={"tool": tool, "args_min": {"items": body.items}, "cost": 1})
        event = None
        if body.session_id:
            event = sessions.setdefault(body.session_id, Session()).publish({"tool": tool, "ok": True})
        return {"tool": tool, "result": digest, "event_id": event["id"] if event else None}

    @app.websocket("/v1/sessions/{session_id}/events")
    async def events(websocket: WebSocket, session_id: str, last_event_id: int | None = None):
        start = time.perf_counter()
        await websocket.accept()
        session = sessions.setdefault(session_id[:64], Session())
        queue: asyncio.Queue = asyncio.Queue()
        session.listeners.add(queue)
        try:
            if last_event_id is not None:
                missed = session.after(last_event_id)
                for event in missed:
                    await websocket.send_json(event)
                replayed.inc(len(missed))
                reconnects.observe(time.perf_counter() - start)
            await websocket.send_json({"type": "ready", "replayed": len(session.after(last_event_id or 0))
                                       if last_event_id is not None else 0})
            closed = asyncio.ensure_future(websocket.receive())  # completes when the client goes away
            while True:
                next_event = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({closed, next_event}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    next_event.cancel()
                    break
                await websocket.send_json(next_event.result())
        except WebSocketDisconnect:
            pass
        finally:
            session.listeners.discard(queue)

    obs.health.add_check("policy", lambda: reachable(policy_url))
    obs.health.add_check("sessions", lambda: (True, f"{len(sessions)} sessions"))
    app.state.sessions = sessions
    return app
