"""Gateway: verifies JWTs against a JWKS it refreshes, asks policy, routes to core and office,
delivers webhooks and presigns media.

JWKS refreshes run every `jwks_refresh_s`; each failure (real, or injected by the `jwks_fail`
flag) increments `gateway_jwks_refresh_consecutive_failures` until a success resets it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import boto3
import httpx
import jwt
from botocore.config import Config
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from collectors import ApiError
from collectors.context import current
from services.common import downstream_headers, make_app, peer_urls, raise_for_envelope, reachable
from vigia.model import Catalog

BUCKET_OF = {"GET": "read", "POST": "write"}


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
    jwks_state = {"keys": {}, "fetched": 0.0, "failures": 0}
    failures = obs.metrics.labels("gateway_jwks_refresh_consecutive_failures")
    # Presigning is local computation: credentials and endpoint come from the environment (MinIO in
    # compose); without them the URL is signed with a placeholder key that MinIO would refuse.
    s3 = boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                      endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
                      aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "unset"),
                      aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "unset"),
                      config=Config(signature_version="s3v4"))

    async def refresh_jwks() -> bool:
        try:
            if obs.flags.jwks_fail:
                raise httpx.ConnectError("JWKS refresh failure injected by flag")
            r = await app.state.http.get(f"{urls['policy']}/v1/jwks")
            r.raise_for_status()
            jwks_state["keys"] = {k["kid"]: jwt.PyJWK(k) for k in r.json()["keys"]}
            jwks_state["fetched"] = time.time()
        except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWKError):
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
            await refresh_jwks()
            await asyncio.sleep(jwks_refresh_s)

    tasks: list[asyncio.Task] = []
    app.router.on_startup.append(lambda: tasks.append(asyncio.get_running_loop().create_task(refresher())))

    def authenticate(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise ApiError("UNAUTHORIZED")
        token = header[7:]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = jwks_state["keys"].get(kid)
            if key is None:
                raise ApiError("UNAUTHORIZED")
            claims = jwt.decode(token, key.key, algorithms=["RS256"], issuer="vigia-policy")
        except jwt.PyJWTError:
            raise ApiError("UNAUTHORIZED") from None
        tenant = claims.get("tenant")
        if tenant not in catalog.tenants:
            raise ApiError("FORBIDDEN")
        ctx = current()
        if ctx is not None:
            ctx.tenant = tenant
        return tenant

    async def admit(tenant: str, bucket: str, session_type: str = "http") -> None:
        try:
            r = await app.state.http.post(f"{urls['policy']}/v1/eval", json={"tenant": tenant, "bucket": bucket},
                                          headers=downstream_headers(tenant))
            r.raise_for_status()
        except httpx.HTTPError:
            raise ApiError("UPSTREAM_UNAVAILABLE") from None
        answer = r.json()
        if answer["decision"] == "backpressure":
            obs.metrics.labels("gateway_backpressure_total", session_type=session_type).inc()
            raise ApiError("BACKPRESSURE", retry_after_ms=answer["retry_after_ms"])
        if answer["decision"] == "rate_limit":
            raise ApiError("RATE_LIMIT", retry_after_ms=answer["retry_after_ms"])
        if answer["decision"] == "deny":
            raise ApiError("FORBIDDEN")

    async def forward(request: Request, component: str, path: str, bucket: str, session_type: str = "http") -> Response:
        tenant = authenticate(request)
        await admit(tenant, bucket, session_type)
        try:
            r = await app.state.http.request(request.method, f"{urls[component]}{path}", content=await request.body(),
                                             params=request.query_params, headers=downstream_headers(tenant)
                                             | {"content-type": request.headers.get("content-type", "application/json")})
        except httpx.HTTPError:
            raise ApiError("UPSTREAM_UNAVAILABLE") from None
        raise_for_envelope(r)
        obs.trails.append("gateway.request_min", scope="gateway", actor=tenant, tenant=tenant,
                          data={"route": request.scope["route"].path, "method": request.method, "cost": 1})
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    @app.get("/v1/items")
    async def list_items(request: Request):
        return await forward(request, "core", "/v1/items", "read")

    @app.post("/v1/items")
    async def create_item(request: Request):
        return await forward(request, "core", "/v1/items", "write")

    @app.get("/v1/items/{item_id}")
    async def get_item(item_id: int, request: Request):
        return await forward(request, "core", f"/v1/items/{item_id}", "read")

    @app.post("/v1/tools/{tool}")
    async def call_tool(tool: str, request: Request):
        if tool not in catalog.label_sets["tool"]:
            raise ApiError("NOT_FOUND")
        return await forward(request, "office", f"/v1/tools/{tool}", "tool", session_type="mcp")

    @app.post("/v1/webhooks")
    async def deliver(body: Webhook, request: Request):
        tenant = authenticate(request)
        if body.dest not in dests:
            raise ApiError("INVALID_ARGUMENT")
        start = time.perf_counter()
        try:
            r = await app.state.http.post(f"{sink}/{body.dest}", json={"event": body.event},
                                          headers=downstream_headers(tenant))
            ok = r.status_code < 300
        except httpx.HTTPError:
            ok = False
        obs.metrics.labels("webhook_delivery_duration_seconds", dest=body.dest).observe(time.perf_counter() - start)
        obs.metrics.labels("webhook_delivery_total", dest=body.dest, ok="true" if ok else "false").inc()
        obs.trails.append("webhook.delivery_min", scope="gateway", actor=tenant, tenant=tenant,
                          data={"dest": body.dest, "state": "delivered" if ok else "failed"})
        if not ok:
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

    obs.health.add_check("jwks", lambda: (bool(jwks_state["keys"]) and jwks_state["failures"] < 3,
                                          f"{len(jwks_state['keys'])} keys, age {time.time() - jwks_state['fetched']:.0f}s"))
    for name in ("policy", "core", "office"):
        obs.health.add_check(name, lambda url=urls[name]: reachable(url))
    app.state.refresh_jwks = refresh_jwks
    return app
