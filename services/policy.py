"""Policy proxy: per-tenant token buckets decide allow / deny / backpressure / rate_limit.

A global bucket models the system's capacity: when it is empty the answer is BACKPRESSURE; a
tenant's own bucket empty is RATE_LIMIT. `retry_after_ms` is the time until the bucket holds
the request's cost; a cost above a bucket's burst could never be granted, so it is denied.
The `quota_override` flag sets the global refill rate at runtime (burst: one second of it, at
least one token); clearing it restores the configured capacity.

Quotas are the built-ins below, with any kind replaced by `<data-dir>/policy-quotas.json`
(`{"write": [rate, burst], "global": [rate, burst]}`), read at start and on `/_reload?stage=next`.
Policy is also the stack's token issuer: RS256 JWTs (`POST /v1/tokens`, admin only) whose keys
it publishes at `/v1/jwks` for the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Request
from pydantic import BaseModel, Field

from collectors import ApiError
from collectors.audit import audited
from collectors.context import current
from services.buckets import TokenBucket
from services.common import make_app
from vigia.model import Catalog

# Quotas (tokens/s, burst): the global capacity, and each tenant's by bucket kind.
QUOTAS = {"global": (1500.0, 3000.0), "read": (100.0, 200.0), "write": (40.0, 80.0), "tool": (60.0, 120.0)}
KINDS = ("read", "write", "tool")
QUOTAS_FILE = "policy-quotas.json"
TOKEN_TTL_S = 3600


def load_quotas(path: Path) -> dict[str, tuple[float, float]]:
    """The built-in quotas with the kinds the file sets replaced; ValueError naming the file if it is malformed."""
    quotas = dict(QUOTAS)
    if not path.exists():
        return quotas
    try:
        for kind, (rate, burst) in json.loads(path.read_text()).items():
            if kind not in QUOTAS or not (float(rate) > 0 and float(burst) >= 1):
                raise ValueError
            quotas[kind] = (float(rate), float(burst))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"{path}: expected {{kind: [rate > 0, burst >= 1]}} with kinds {', '.join(QUOTAS)}") from None
    return quotas


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
    quotas_path = Path(data_dir) / QUOTAS_FILE
    quotas = load_quotas(quotas_path)
    global_bucket = TokenBucket(*quotas["global"], clock=clock)
    buckets = {(t, kind): TokenBucket(*quotas[kind], clock=clock) for t in tenants for kind in KINDS}
    key = signing_key(data_dir)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    kid = jwt.utils.base64url_encode(hashlib.sha256(json.dumps(jwk, sort_keys=True).encode()).digest()[:12]).decode()
    jwks = {"keys": [jwk | {"kid": kid, "use": "sig", "alg": "RS256"}]}
    evals = {d: obs.metrics.labels("policy_eval_total", decision=d) for d in catalog.label_sets["decision"]}

    def global_capacity() -> tuple[float, float]:
        override = obs.flags.quota_override
        return quotas["global"] if override is None else (override, max(override, 1.0))

    def decide(req: EvalRequest) -> tuple[str, int]:
        capacity = global_capacity()
        if (global_bucket.rate, global_bucket.burst) != capacity:
            global_bucket.configure(*capacity)
        bucket = buckets.get((req.tenant, req.bucket))
        if bucket is None or req.cost > bucket.burst or req.cost > global_bucket.burst:
            return "deny", 0
        wait = global_bucket.take(req.cost)
        if wait:
            return "backpressure", wait
        wait = bucket.take(req.cost)
        if wait:
            global_bucket.tokens += req.cost  # not consumed: give it back
            return "rate_limit", wait
        return "allow", 0

    def reload_quotas(stage: str) -> None:
        """Re-read the quotas file; a malformed one changes nothing."""
        try:
            quotas.update(load_quotas(quotas_path))
        except ValueError as exc:
            print(f"vigia policy: {exc}; quotas unchanged", file=sys.stderr)
            raise ApiError("INVALID_ARGUMENT") from None
        global_bucket.configure(*global_capacity())
        for (_, kind), bucket in buckets.items():
            bucket.configure(*quotas[kind])

    @app.post("/v1/eval")
    async def evaluate(req: EvalRequest):
        decision, wait = decide(req)
        evals[decision].inc()
        if decision != "allow":
            known = req.tenant if req.tenant in tenants else None  # a known tenant's record is signed with its key
            obs.trails.append("policy.eval_min", scope="policy", actor=known or "unknown",
                              data={"bits": int(req.cost), "decision": decision}, tenant=known)
        body = {"decision": decision}
        if wait:
            body["retry_after_ms"] = wait
        return body

    @app.get("/v1/buckets/{tenant}")
    async def bucket_snapshot(tenant: str):
        if tenant not in tenants:
            raise ApiError("NOT_FOUND")
        return {"tenant": tenant, "global": global_bucket.snapshot(),
                "buckets": {kind: buckets[(tenant, kind)].snapshot() for kind in KINDS}}

    @app.get("/v1/jwks")
    async def keys():
        return jwks

    @app.post("/v1/tokens")
    @audited(obs, "auth.login_min", lambda result, req, request: {"method": "token", "ok": True})
    async def issue(req: TokenRequest, request: Request):
        given = request.headers.get("x-admin-token", "")
        if not admin_token or not hmac.compare_digest(given.encode(), admin_token.encode()):
            raise ApiError("UNAUTHORIZED")
        if req.tenant not in tenants:
            raise ApiError("INVALID_ARGUMENT")
        ctx = current()
        if ctx is not None:
            ctx.tenant = req.tenant  # the login is the tenant's: its trail's actor and the log's tenant
        now = int(time.time())
        token = jwt.encode({"sub": req.tenant, "tenant": req.tenant, "iat": now, "exp": now + TOKEN_TTL_S,
                            "iss": "vigia-policy"}, key, algorithm="RS256", headers={"kid": kid})
        return {"token": token, "expires_in": TOKEN_TTL_S}

    obs.health.add_check("buckets", lambda: (True, f"global {global_bucket.snapshot()['tokens']:.0f} tokens"))
    obs.reload_hooks.append(reload_quotas)
    return app
