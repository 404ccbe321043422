"""Locust users of the proof scenarios (see loadtests/scenarios.py for which scenario runs which).

- GatewayUser: the steady mix through the gateway: items (list, create, get), MCP tools, webhooks,
  media presigns, across every tenant.
- SessionUser: a WebSocket session on office; calls tools through the gateway with its session id
  and times how long each event takes to arrive on the socket.
- ReconnectingSessionUser (ws-kill): drops its socket without a close frame, publishes while it is
  gone, reconnects with `last_event_id` and checks that it received exactly the missed events
  (the last 100). A wrong replay is a Locust failure named "ws replay".
- BurstUser: one tenant's tool calls far beyond the quota policy grants (the burst scenario).

Run by `vigia prove`, or by hand:
`locust -f loadtests/locustfile.py --host http://127.0.0.1:8081 GatewayUser`.
Environment: VIGIA_TOKENS (JSON {tenant: JWT}, from policy's /v1/tokens), VIGIA_RATE_PER_MIN
(requests per minute shared by all GatewayUsers), VIGIA_USERS (how many GatewayUsers share it),
VIGIA_OFFICE_URL (office, for the WebSocket users).
Quota answers (429 RATE_LIMIT, 503 BACKPRESSURE with an ErrorToken) are behaviour, not failures.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

import websocket
from locust import FastHttpUser, between, constant_throughput, task

TOKENS = json.loads(os.environ.get("VIGIA_TOKENS", "{}"))
RATE = float(os.environ.get("VIGIA_RATE_PER_MIN", "5000"))
USERS = int(os.environ.get("VIGIA_USERS", "20"))
OFFICE = os.environ.get("VIGIA_OFFICE_URL", "http://127.0.0.1:8084")
TOOLS = ("search_docs", "summarize_brief", "create_task", "fetch_calendar")
WEBHOOK_DESTS = ("billing", "crm", "audit_sink")
REPLAY = 100  # events office keeps per session for reconnecting clients
QUOTA_ANSWERS = (429, 503)


class TenantUser(FastHttpUser):
    abstract = True

    def on_start(self):
        self.tenant = random.choice(sorted(TOKENS))
        self.headers = {"authorization": f"Bearer {TOKENS[self.tenant]}", "content-type": "application/json"}

    def post(self, path: str, body: dict, name: str, *ok: int):
        with self.client.post(path, data=json.dumps(body), headers=self.headers, name=name, catch_response=True) as r:
            if r.status_code in ok or r.status_code in QUOTA_ANSWERS:
                r.success()
            return r


class GatewayUser(TenantUser):
    wait_time = constant_throughput(RATE / 60 / USERS)

    def on_start(self):
        super().on_start()
        self.items: list[int] = []

    @task(40)
    def list_items(self):
        with self.client.get("/v1/items", headers=self.headers, name="/v1/items", catch_response=True) as r:
            if r.status_code == 200 or r.status_code in QUOTA_ANSWERS:
                r.success()

    @task(15)
    def create_item(self):
        r = self.post("/v1/items", {"kind": random.choice(("doc", "note", "task")), "size": random.randint(1, 50_000)},
                      "/v1/items", 201)
        if r.status_code == 201:
            self.items.append(r.json()["id"])

    @task(20)
    def get_item(self):
        item = random.choice(self.items) if self.items else 1
        with self.client.get(f"/v1/items/{item}", headers=self.headers, name="/v1/items/{item_id}", catch_response=True) as r:
            if r.status_code in (200, 404) or r.status_code in QUOTA_ANSWERS:
                r.success()

    @task(20)
    def call_tool(self):
        body = {"items": random.randint(0, 20), "session_id": f"s-{self.tenant}"}
        self.post(f"/v1/tools/{random.choice(TOOLS)}", body, "/v1/tools/{tool}", 200)

    @task(3)
    def webhook(self):
        self.post("/v1/webhooks", {"dest": random.choice(WEBHOOK_DESTS)}, "/v1/webhooks", 202)

    @task(2)
    def presign(self):
        self.post("/v1/media/presign", {"bytes": random.randint(1, 50_000_000)}, "/v1/media/presign", 200)


class SessionUser(TenantUser):
    """A live session: tool calls through the gateway, their events read back from office's socket."""

    wait_time = between(0.5, 1.5)

    def on_start(self):
        super().on_start()
        self.session = f"ws-{self.tenant}-{uuid.uuid4().hex[:12]}"
        self.last_event = 0
        self.socket = self.connect()
        self.receive()  # the "ready" greeting

    def on_stop(self):
        self.socket.close()

    def connect(self, last_event_id: int | None = None):
        url = OFFICE.replace("http", "ws", 1) + f"/v1/sessions/{self.session}/events"
        return websocket.create_connection(url + (f"?last_event_id={last_event_id}" if last_event_id is not None else ""),
                                           timeout=5)

    def receive(self) -> dict:
        event = json.loads(self.socket.recv())
        self.last_event = max(self.last_event, event.get("id", 0))
        return event

    def publish(self) -> int | None:
        """One tool call carrying the session id; the id of the event it published, or None."""
        r = self.post(f"/v1/tools/{random.choice(TOOLS)}", {"items": 1, "session_id": self.session}, "/v1/tools/{tool}", 200)
        return r.json().get("event_id") if r.status_code == 200 else None

    @task
    def event_round_trip(self):
        start = time.perf_counter()
        published = self.publish()
        if published is None:
            return
        error = None
        try:
            event = self.receive()
            if event.get("id") != published:
                error = AssertionError(f"expected event {published}, got {event.get('id')}")
        except (websocket.WebSocketException, OSError) as exc:
            error = exc
        self.environment.events.request.fire(request_type="WS", name="event", response_time=(time.perf_counter() - start) * 1000,
                                             response_length=0, exception=error, context={})
        if error is not None:
            self.socket.close()
            self.socket = self.connect(self.last_event)
            self.drain_replay()

    def drain_replay(self) -> list[int]:
        """Read the replay after a reconnect, up to the `ready` marker; the replayed event ids."""
        ids = []
        while True:
            event = self.receive()
            if event.get("type") == "ready":
                return ids
            ids.append(event["id"])


class ReconnectingSessionUser(SessionUser):
    """ws-kill: the socket dies without a close frame, events go on, the client comes back."""

    wait_time = between(1, 3)

    @task
    def kill_and_reconnect(self):
        self.socket.sock.shutdown(2)  # a dead TCP connection, not a polite close
        self.socket.sock.close()
        missed = [e for e in (self.publish() for _ in range(random.randint(1, REPLAY + 30))) if e is not None]
        start = time.perf_counter()
        error = None
        try:
            self.socket = self.connect(self.last_event)
            replayed = self.drain_replay()
            if replayed != missed[-REPLAY:]:
                error = AssertionError(f"replayed {len(replayed)} events, expected the last {min(len(missed), REPLAY)} "
                                       f"of {len(missed)} missed")
        except (websocket.WebSocketException, OSError) as exc:
            error = exc
        self.environment.events.request.fire(request_type="WS", name="ws replay", response_time=(time.perf_counter() - start) * 1000,
                                             response_length=len(missed), exception=error, context={})


class BurstUser(TenantUser):
    """Tool calls of one tenant, back to back: far beyond its quota and policy's capacity."""

    wait_time = constant_throughput(20)

    def on_start(self):
        super().on_start()
        self.tenant = sorted(TOKENS)[0]
        self.headers["authorization"] = f"Bearer {TOKENS[self.tenant]}"

    @task
    def burst_tool_call(self):
        self.post(f"/v1/tools/{random.choice(TOOLS)}", {"items": 1}, "burst /v1/tools/{tool}", 200)
