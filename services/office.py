"""Office room: MCP-style tool calls and a WebSocket event stream that replays what a client missed.

Every tool call asks policy (bucket `tool`), the one evaluation per call (the gateway relays, it
does not ask again); BACKPRESSURE and RATE_LIMIT come back as ErrorTokens with policy's
`retry_after_ms` and are counted in `office_mcp_call_total{err}`. A call carrying `session_id`
publishes an event to that session. A client that reconnects to
`/v1/sessions/{id}/events?last_event_id=N` first receives every event after N still in the
session's buffer (the last 100), then `{"type": "ready", "replayed": n}`, then live events.

`office_ws_reconnect_duration_seconds` is the service's share of a reconnect: from the reconnecting
client's arrival (the handshake of a connection carrying `last_event_id`) to the replay being sent
(the missed events and the `ready` message). It deliberately does not count from the old socket's
end: how long a client stays away is the client's doing, not something the service can serve
faster, and the SLO "reconnect p95 < 500 ms" is about the service.

Sessions nobody listens to and nothing was published to for SESSION_IDLE_S are evicted (every
minute, and on `/_reload?stage=next`); past MAX_SESSIONS the least recently used idle one goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from pathlib import Path

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from collectors import ApiError
from collectors.context import current
from services.common import add_peer_checks, ask_policy, make_app, peer_urls
from vigia.model import Catalog

REPLAY = 100
SESSION_IDLE_S = 600.0
MAX_SESSIONS = 10_000
EVICT_EVERY_S = 60.0


class ToolCall(BaseModel):
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    items: int = Field(default=1, ge=0, le=1000)


class Session:
    def __init__(self, now: float):
        self.events: deque[dict] = deque(maxlen=REPLAY)
        self.next_id = 1
        self.listeners: set[asyncio.Queue] = set()
        self.used = now  # last publish or connection, for eviction

    def publish(self, payload: dict) -> dict:
        event = {"id": self.next_id, **payload}
        self.next_id += 1
        self.events.append(event)
        for queue in self.listeners:
            queue.put_nowait(event)
        return event

    def after(self, last_id: int) -> list[dict]:
        return [e for e in self.events if e["id"] > last_id]


class Sessions:
    """Sessions by id, least recently used first."""

    def __init__(self, clock):
        self.clock = clock
        self.by_id: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str) -> Session:
        now = self.clock()
        session = self.by_id.get(session_id)
        if session is None:
            session = self.by_id[session_id] = Session(now)
            if len(self.by_id) > MAX_SESSIONS:
                self._drop_oldest_idle()
        else:
            self.by_id.move_to_end(session_id)
            session.used = now
        return session

    def _drop_oldest_idle(self) -> None:
        for session_id, session in self.by_id.items():
            if not session.listeners:
                del self.by_id[session_id]
                return

    def evict(self) -> int:
        """Drop the sessions idle for SESSION_IDLE_S with no listener; how many went."""
        now = self.clock()
        idle = [k for k, s in self.by_id.items() if not s.listeners and now - s.used > SESSION_IDLE_S]
        for session_id in idle:
            del self.by_id[session_id]
        return len(idle)


async def stream(websocket: WebSocket, queue: asyncio.Queue) -> None:
    """Live events until the client goes away; anything the client sends is ignored."""
    receive = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            get = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({receive, get}, return_when=asyncio.FIRST_COMPLETED)
            if get in done:
                await websocket.send_json(get.result())
            else:
                get.cancel()  # a cancelled get leaves its event in the queue
            if receive in done:
                if receive.result()["type"] == "websocket.disconnect":
                    return
                receive = asyncio.ensure_future(websocket.receive())
    finally:
        receive.cancel()


def create_app(catalog: Catalog, data_dir: Path, node: str = "n1", admin_token: str | None = None,
               peers: dict[str, str] | None = None, clock=time.monotonic):
    app, obs = make_app(catalog, "office", data_dir, node, admin_token, "vigia office")
    policy_url = peer_urls(catalog, peers)["policy"]
    tools = set(catalog.label_sets["tool"])
    sessions = Sessions(clock)
    reconnects = obs.metrics.labels("office_ws_reconnect_duration_seconds")
    replayed = obs.metrics.labels("office_ws_replayed_events_total")

    def count(tool: str, ok: bool, err: str = "") -> None:
        obs.metrics.labels("office_mcp_call_total", tool=tool, ok="true" if ok else "false", err=err).inc()

    @app.post("/v1/tools/{tool}")
    async def call_tool(tool: str, body: ToolCall):
        if tool not in tools:
            raise ApiError("NOT_FOUND")
        ctx = current()
        tenant = ctx.tenant if ctx else catalog.tenants[0]
        if ctx is not None:
            ctx.tool = tool
        start = time.perf_counter()
        try:
            await ask_policy(app.state.http, policy_url, tenant, "tool")
            # The tool's work: a digest over its input size, cheap and real.
            digest = hashlib.blake2b(str(body.items).encode() * max(body.items, 1), digest_size=8).hexdigest()
        except ApiError as error:
            count(tool, False, error.token)
            raise
        finally:
            obs.metrics.labels("office_mcp_call_duration_seconds", tool=tool).observe(time.perf_counter() - start)
        count(tool, True)
        obs.trails.append("office.tool_call", scope="office", actor=tenant, tenant=tenant,
                          refs=[ctx.correlation_id] if ctx else [],
                          data={"tool": tool, "args_min": {"items": body.items}, "cost": 1})
        event = sessions.get(body.session_id).publish({"tool": tool, "ok": True}) if body.session_id else None
        return {"tool": tool, "result": digest, "event_id": event["id"] if event else None}

    @app.websocket("/v1/sessions/{session_id}/events")
    async def events(websocket: WebSocket, session_id: str, last_event_id: int | None = None):
        arrived = clock()  # the handshake is here: a reconnect's timing starts now
        await websocket.accept()
        session = sessions.get(session_id[:64])
        queue: asyncio.Queue = asyncio.Queue()
        session.listeners.add(queue)  # before the snapshot, with no await between: nothing lost or sent twice
        missed = session.after(last_event_id) if last_event_id is not None else []
        try:
            for event in missed:
                await websocket.send_json(event)
            await websocket.send_json({"type": "ready", "replayed": len(missed)})
            if last_event_id is not None:  # a reconnect: handshake to replay sent
                replayed.inc(len(missed))
                reconnects.observe(clock() - arrived)
            await stream(websocket, queue)
        except WebSocketDisconnect:
            pass
        finally:
            session.listeners.discard(queue)
            session.used = clock()

    async def evict_idle_sessions() -> None:
        while True:
            await asyncio.sleep(EVICT_EVERY_S)
            sessions.evict()

    app.state.background.append(evict_idle_sessions)
    obs.reload_hooks.append(lambda stage: sessions.evict())
    add_peer_checks(app, obs, {"policy": policy_url})
    obs.health.add_check("sessions", lambda: (True, f"{len(sessions.by_id)} sessions"))
    return app
