"""Policy proxy: per-tenant token buckets decide allow / deny / backpressure / rate_limit.

A global bucket models the system's capacity: when it is empty the answer is BACKPRESSURE; a
tenant's own bucket empty is RATE_LIMIT. `retry_after_ms` is the time until the bucket holds
the request's cost. The `quota_override` flag lowers the global refill rate at runtime.
Policy is also the stack's token issuer: RS256 JWTs (`POST /v1/tokens`, admin only) whose keys
it publishes at `/v1/jwks` for the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Request
from pydantic import BaseModel, Field

from collectors import ApiError
from services.buckets import TokenBucket
from services.common import make_app
from vigia.model import Catalog

# Per-tenant quotas by bucket kind (tokens/s, burst), and the global capacity.
TENANT_QUOTAS = {"read": (100.0, 200.0), "write": (40.0, 80.0), "tool": (60.0, 120.0)}
GLOBAL_QUOTA = (1500.0, 3000.0)
TOKEN_TTL_S = 3600


class EvalRequest(BaseModel):
    tenant: str = Field(max_length=64)
    bucket: str = Field(max_length=16)
    cost: float = Field(default=1.0, gt=0, le=100)


class TokenRequest(BaseModel):
    tenant: str = Field(max_length=64)


def signing_key(data_dir: Path):
    """The issuer's RSA key, created once with 0600 permissions."""
    path = Path(data_dir) / "keys" / "policy-jwt.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def create_app(catalog: Catalog, data_dir: Path, node: str = "n1", admin_token: str | None = None, clock=time.monotonic):
    app, obs = make_app(catalog, "policy", data_dir, node, admin_token, "vigia policy")
    tenants = set(catalog.tenants)
    global_bucket = TokenBucket(*GLOBAL_QUOTA, clock=clock)
    buckets = {(t, kind): TokenBucket(rate, burst, clock=clock) for t in tenants for kind, (rate, burst) in TENANT_QUOTAS.items()}
    key = signing_key(data_dir)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    kid = jwt.utils.base64url_encode(hashlib.sha256(json.dumps(jwk, sort_keys=True).encode()).digest()[:12]).decode()
    jwks = {"keys": [jwk | {"kid": kid, "use": "sig", "alg": "RS256"}]}
    evals = {d: obs.metrics.labels("policy_eval_total", decision=d) for d in catalog.label_sets["decision"]}

    def decide(req: EvalRequest) -> tuple[str, int]:
        override = obs.flags.quota_override
        rate = override if override is not None else GLOBAL_QUOTA[0]
        if global_bucket.rate != rate:
            global_bucket.set_rate(rate)
            global_bucket.burst = min(GLOBAL_QUOTA[1], max(rate, 1.0))
        if req.tenant not in tenants or req.bucket not in TENANT_QUOTAS:
            return "deny", 0
        wait = global_bucket.take(req.cost)
        if wait:
            return "backpressure", wait
        wait = buckets[(req.tenant, req.bucket)].take(req.cost)
        if wait:
            global_bucket.tokens = min(global_bucket.burst, global_bucket.tokens + req.cost)  # not consumed
            return "rate_limit", wait
        return "allow", 0

    @app.post("/v1/eval")
    async def evaluate(req: EvalRequest):
        decision, wait = decide(req)
        evals[decision].inc()
        if decision != "allow":
            obs.trails.append("policy.eval_min", scope="policy", actor=req.tenant if req.tenant in tenants else "unknown",
                              data={"bits": int(req.cost), "decision": decision})
        body = {"decision": decision}
        if wait:
            body["retry_after_ms"] = wait
        return body

    @app.get("/v1/buckets/{tenant}")
    async def bucket_snapshot(tenant: str):
        if tenant not in tenants:
            raise ApiError("NOT_FOUND")
        return {"tenant": tenant, "global": global_bucket.snapshot(),
                "buckets": {kind: buckets[(tenant, kind)].snapshot() for kind in TENANT_QUOTAS}}

    @app.get("/v1/jwks")
    async def keys():
        return jwks

    @app.post("/v1/tokens")
    async def issue(req: TokenRequest, request: Request):
        given = request.headers.get("x-admin-token", "")
        if not admin_token or not hmac.compare_digest(given.encode(), admin_token.encode()):
            raise ApiError("UNAUTHORIZED")
        if req.tenant not in tenants:
            raise ApiError("INVALID_ARGUMENT")
        now = int(time.time())
        token = jwt.encode({"sub": req.tenant, "tenant": req.tenant, "iat": now, "exp": now + TOKEN_TTL_S,
                            "iss": "vigia-policy"}, key, algorithm="RS256", headers={"kid": kid})
        obs.trails.append("auth.login_min", scope="policy", actor=req.tenant, tenant=req.tenant,
                          data={"method": "token", "ok": True})
        return {"token": token, "expires_in": TOKEN_TTL_S}

    obs.health.add_check("buckets", lambda: (True, f"global {global_bucket.snapshot()['tokens']:.0f} tokens"))
    app.state.decide = decide
    return app
