"""Gateway: verifies JWTs against a JWKS it refreshes, asks policy, routes to core and office,
delivers webhooks and presigns media.

JWKS refreshes run every `jwks_refresh_s`, and at once on `/_reload?stage=next`; each failure
(real, or injected by the `jwks_fail` flag) increments `gateway_jwks_refresh_consecutive_failures`
until a success resets it. Item routes ask policy before going to core; tool calls go straight to
office, which asks policy itself (one evaluation per call), and its BACKPRESSURE is counted here
too. A peer's ErrorToken is relayed as is; every 401/403 the gateway answers writes an
`access.denied_min` trail.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import boto3
import jwt
from botocore.config import Config
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from yarl import URL

from collectors import ApiError
from collectors.audit import audited, slow
from collectors.context import current
from services.common import (JSON, add_peer_checks, ask_policy, call, downstream_error, downstream_headers, json_body,
                             make_app, peer_url, peer_urls)
from vigia.conventions import OTHER_TENANT
from vigia.model import Catalog

SLOW_WEBHOOK_MS = 1000


class Webhook(BaseModel):
    dest: str = Field(pattern=r"^[a-z_]{1,32}$")
    event: str = Field(default="item.created", pattern=r"^[a-z_.]{1,64}$")


class Presign(BaseModel):
    bytes: int = Field(ge=0, le=5 * 1024**3)


def bytes_class(size: int) -> str:
    for limit, name in ((1 << 20, "lt_1m"), (100 << 20, "lt_100m"), (1 << 30, "lt_1g")):
        if size < limit:
            return name
    return "ge_1g"


def create_app(catalog: Catalog, data_dir: Path, node: str = "n1", admin_token: str | None = None,
               peers: dict[str, str] | None = None, webhook_base: str | None = None, jwks_refresh_s: float = 10.0):
    app, obs = make_app(catalog, "gateway", data_dir, node, admin_token, "vigia gateway")
    urls = peer_urls(catalog, peers)
    sink = webhook_base or f"http://127.0.0.1:{catalog.profiles['local'].webhook_sink_port}/webhooks"
    dests = set(catalog.label_sets["webhook_dest"])
    tools = set(catalog.label_sets["tool"])
    jwks_state = {"keys": {}, "fetched": 0.0, "failures": 0}
    failures = obs.metrics.labels("gateway_jwks_refresh_consecutive_failures")
    refresh_now = asyncio.Event()
    # Presigning is local computation: credentials and endpoint come from the environment (MinIO in
    # compose); without them the URL is signed with a placeholder key that MinIO would refuse.
    s3 = boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                      endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
                      aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "unset"),
                      aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "unset"),
                      config=Config(signature_version="s3v4"))

    jwks_url = peer_url(f"{urls['policy']}/v1/jwks")

    async def refresh_jwks() -> bool:
        try:
            if obs.flags.jwks_fail:
                raise ConnectionError("JWKS refresh failure injected by flag")
            status, body = await call(app.state.http, "GET", jwks_url)  # ApiError if policy does not answer
            if status != 200:
                raise ValueError(f"JWKS answered HTTP {status}")
            jwks_state["keys"] = {k["kid"]: jwt.PyJWK(k) for k in json.loads(body)["keys"]}
            jwks_state["fetched"] = time.time()
        except (ApiError, ConnectionError, ValueError, KeyError, TypeError, jwt.PyJWKError):
            obs.metrics.labels("gateway_jwks_refresh_total", ok="false").inc()
            jwks_state["failures"] += 1
            failures.set(jwks_state["failures"])
            return False
        obs.metrics.labels("gateway_jwks_refresh_total", ok="true").inc()
        jwks_state["failures"] = 0
        failures.set(0)
        return True

    async def refresher() -> None:
        while True:
            refresh_now.clear()
            await refresh_jwks()
            try:
                await asyncio.wait_for(refresh_now.wait(), jwks_refresh_s)
            except TimeoutError:
                pass

    def denied(request: Request, token: str, reason: str, actor: str = "unknown") -> ApiError:
        """An access.denied_min trail for a 401/403 about to be answered; the error to raise."""
        ctx = current()
        obs.trails.append("access.denied_min", scope="gateway", actor=actor, refs=[ctx.correlation_id] if ctx else [],
                          data={"route": request.scope["route"].path, "reason": reason})
        return ApiError(token)

    def refuse(request: Request, error: ApiError, tenant: str, source: str, session_type: str) -> ApiError:
        """Count or audit a refusal that came from `source` (policy or the peer); the error to raise."""
        if error.token == "BACKPRESSURE":
            obs.metrics.labels("gateway_backpressure_total", session_type=session_type).inc()
        elif error.token in ("UNAUTHORIZED", "FORBIDDEN"):
            return denied(request, error.token, source, actor=tenant)
        return error

    def authenticate(request: Request) -> str:
        """The tenant of the request's verified JWT, which becomes the request's tenant (until then it
        is `other`: an `x-tenant` header sent by a client is a claim, not an identity)."""
        ctx = current()
        if ctx is not None:
            ctx.tenant = OTHER_TENANT
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise denied(request, "UNAUTHORIZED", "no_token")
        token = header[7:]
        try:
            key = jwks_state["keys"].get(jwt.get_unverified_header(token).get("kid"))
            if key is None:
                raise denied(request, "UNAUTHORIZED", "unknown_key")
            claims = jwt.decode(token, key.key, algorithms=["RS256"], issuer="vigia-policy")
        except jwt.PyJWTError:
            raise denied(request, "UNAUTHORIZED", "bad_token") from None
        tenant = claims.get("tenant")
        if tenant not in catalog.tenants:
            raise denied(request, "FORBIDDEN", "unknown_tenant")
        if ctx is not None:
            ctx.tenant = tenant
        return tenant

    async def admit(request: Request, tenant: str, bucket: str) -> None:
        try:
            await ask_policy(app.state.http, urls["policy"], tenant, bucket)
        except ApiError as error:
            raise refuse(request, error, tenant, "policy", "http") from None

    async def forward(request: Request, tenant: str, component: str, path: str, session_type: str = "http") -> Response:
        """The request to the peer as it came (body bytes and query string passed through, not
        re-encoded), with our hop headers; the peer's answer relayed as is, or its ErrorToken."""
        body = await request.body()
        headers = downstream_headers(tenant)
        if body:
            headers["content-type"] = request.headers.get("content-type", JSON)
        query = request.scope["query_string"]
        target = f"{urls[component]}{path}?{query.decode('latin-1')}" if query else f"{urls[component]}{path}"
        status, content = await call(app.state.http, request.method, URL(target, encoded=True),
                                     body=body or None, headers=headers)
        error = downstream_error(status, content, obs.errors)
        if error is not None:
            raise refuse(request, error, tenant, "downstream", session_type)
        obs.trails.append("gateway.request_min", scope="gateway", actor=tenant, tenant=tenant,
                          data={"route": request.scope["route"].path, "method": request.method, "cost": 1})
        return Response(content, status_code=status, media_type=JSON)

    @app.get("/v1/items")
    async def list_items(request: Request):
        tenant = authenticate(request)
        await admit(request, tenant, "read")
        return await forward(request, tenant, "core", "/v1/items")

    @app.post("/v1/items")
    async def create_item(request: Request):
        tenant = authenticate(request)
        await admit(request, tenant, "write")
        return await forward(request, tenant, "core", "/v1/items")

    @app.get("/v1/items/{item_id}")
    async def get_item(item_id: int, request: Request):
        tenant = authenticate(request)
        await admit(request, tenant, "read")
        return await forward(request, tenant, "core", f"/v1/items/{item_id}")

    @app.post("/v1/tools/{tool}")
    async def call_tool(tool: str, request: Request):
        tenant = authenticate(request)
        if tool not in tools:
            raise ApiError("NOT_FOUND")
        ctx = current()
        if ctx is not None:
            ctx.tool = tool
        return await forward(request, tenant, "office", f"/v1/tools/{tool}", session_type="mcp")

    @audited(obs, "webhook.delivery_min",
             lambda ok, dest, event: {"dest": dest, "state": "delivered" if ok else "failed"})
    async def deliver_webhook(dest: str, event: str) -> bool:
        """One delivery attempt; whether the destination took it."""
        start = time.perf_counter()
        with slow(obs, "webhook_delivery", SLOW_WEBHOOK_MS):
            headers = downstream_headers()
            headers["content-type"] = JSON
            try:
                status, _ = await call(app.state.http, "POST", f"{sink}/{dest}", body=json_body({"event": event}),
                                       headers=headers)
                ok = status < 300
            except ApiError:  # the destination did not answer
                ok = False
        obs.metrics.labels("webhook_delivery_duration_seconds", dest=dest).observe(time.perf_counter() - start)
        obs.metrics.labels("webhook_delivery_total", dest=dest, ok="true" if ok else "false").inc()
        return ok

    @app.post("/v1/webhooks")
    async def deliver(body: Webhook, request: Request):
        authenticate(request)
        if body.dest not in dests:
            raise ApiError("INVALID_ARGUMENT")
        if not await deliver_webhook(body.dest, body.event):
            raise ApiError("UPSTREAM_UNAVAILABLE")
        return JSONResponse({"delivered": True}, status_code=202)

    @app.post("/v1/media/presign")
    async def presign(body: Presign, request: Request):
        tenant = authenticate(request)
        ctx = current()
        try:
            url = s3.generate_presigned_url("put_object", ExpiresIn=600, Params={
                "Bucket": catalog.storage.bucket, "Key": f"media/{tenant}/{ctx.correlation_id if ctx else 'x'}"})
            ok = True
        except Exception:  # noqa: BLE001 - a failed presign is counted and answered as an ErrorToken
            ok = False
        obs.metrics.labels("media_presign_total", ok="true" if ok else "false").inc()
        obs.trails.append("media.presign_min", scope="gateway", actor=tenant, tenant=tenant,
                          data={"bytes_class": bytes_class(body.bytes)})
        if not ok:
            raise ApiError("INTERNAL")
        return {"url": url, "expires_in": 600}

    app.state.background.append(refresher)
    obs.reload_hooks.append(lambda stage: refresh_now.set())
    obs.health.add_check("jwks", lambda: (bool(jwks_state["keys"]) and jwks_state["failures"] < 3,
                                          f"{len(jwks_state['keys'])} keys, age {time.time() - jwks_state['fetched']:.0f}s"))
    add_peer_checks(app, obs, {name: urls[name] for name in ("policy", "core", "office")})
    return app
