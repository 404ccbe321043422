"""Steady traffic through the gateway: a realistic mix of routes, tenants and MCP tools.

Run by `vigia prove` (or by hand: `locust -f loadtests/locustfile.py --host http://127.0.0.1:8081`).
Environment: VIGIA_TOKENS (JSON {tenant: JWT}, from policy's /v1/tokens), VIGIA_RATE_PER_MIN
(total requests per minute across all users), VIGIA_USERS (how many users share that rate).
Faults (backpressure, 5xx, JWKS, chaos, WebSocket kills) are induced by the prover through the
services' runtime flags while this traffic runs, so every fault is measured against real load.
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, constant_throughput, task

TOKENS = json.loads(os.environ.get("VIGIA_TOKENS", "{}"))
RATE = float(os.environ.get("VIGIA_RATE_PER_MIN", "5000"))
USERS = int(os.environ.get("VIGIA_USERS", "20"))
TOOLS = ("search_docs", "summarize_brief", "create_task", "fetch_calendar")
WEBHOOK_DESTS = ("billing", "crm", "audit_sink")


class GatewayUser(FastHttpUser):
    wait_time = constant_throughput(RATE / 60 / USERS)

    def on_start(self):
        self.tenant = random.choice(sorted(TOKENS))
        self.headers = {"authorization": f"Bearer {TOKENS[self.tenant]}", "content-type": "application/json"}
        self.items: list[int] = []

    def _ok(self, response, *codes):
        if response.status_code in codes or response.status_code in (429, 503):
            response.success()  # quotas answering with an ErrorToken are behaviour, not failures

    @task(40)
    def list_items(self):
        with self.client.get("/v1/items", headers=self.headers, name="/v1/items", catch_response=True) as r:
            self._ok(r, 200)

    @task(15)
    def create_item(self):
        body = json.dumps({"kind": random.choice(("doc", "note", "task")), "size": random.randint(1, 50_000)})
        with self.client.post("/v1/items", data=body, headers=self.headers, name="/v1/items", catch_response=True) as r:
            self._ok(r, 201)
            if r.status_code == 201:
                self.items.append(r.json()["id"])

    @task(20)
    def get_item(self):
        item = random.choice(self.items) if self.items else 1
        with self.client.get(f"/v1/items/{item}", headers=self.headers, name="/v1/items/{item_id}", catch_response=True) as r:
            self._ok(r, 200, 404)

    @task(20)
    def call_tool(self):
        body = json.dumps({"items": random.randint(0, 20), "session_id": f"s-{self.tenant}"})
        tool = random.choice(TOOLS)
        with self.client.post(f"/v1/tools/{tool}", data=body, headers=self.headers, name="/v1/tools/{tool}",
                              catch_response=True) as r:
            self._ok(r, 200)

    @task(3)
    def webhook(self):
        body = json.dumps({"dest": random.choice(WEBHOOK_DESTS)})
        with self.client.post("/v1/webhooks", data=body, headers=self.headers, name="/v1/webhooks", catch_response=True) as r:
            self._ok(r, 202)

    @task(2)
    def presign(self):
        body = json.dumps({"bytes": random.randint(1, 50_000_000)})
        with self.client.post("/v1/media/presign", data=body, headers=self.headers, name="/v1/media/presign",
                              catch_response=True) as r:
            self._ok(r, 200)
