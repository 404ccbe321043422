"""What every reference service shares: an instrumented FastAPI app, peers, one HTTP client,
background tasks, peer health checks, and ErrorTokens across hops.

The HTTP client is one aiohttp ClientSession per app (`app.state.http`), created at startup and
closed at shutdown: pooled keep-alive connections to the peers, 5 s in total per call and 1 s to
connect. `call()` is the one way services use it: it answers `(status, body bytes)` and turns a
connection error or a timeout into UPSTREAM_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import json
import os
from functools import lru_cache
from pathlib import Path

import aiohttp
from fastapi import FastAPI
from yarl import URL

from collectors import ApiError, Observability, instrument
from collectors.context import current
from collectors.errortoken import ErrorTokens
from vigia.model import Catalog

# Pool waits count against the total, not the connect timeout (sock_connect is the TCP connect).
TIMEOUT = aiohttp.ClientTimeout(total=5.0, sock_connect=1.0)
CHECK_TIMEOUT = aiohttp.ClientTimeout(total=0.5)
MAX_CONNECTIONS = 200  # pooled connections, across all peers
# An idle pooled connection is dropped after this: below uvicorn's own keep-alive (5 s), so the
# client never sends on a connection the server is closing at that moment.
KEEPALIVE_S = 4.0
JSON = "application/json"
PeerErrors = (aiohttp.ClientError, TimeoutError)  # what a call raises when the peer did not answer


def new_session() -> aiohttp.ClientSession:
    """A pooled, keep-alive client for the peers. Call from inside the running event loop."""
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S)
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT, raise_for_status=False,
                                 skip_auto_headers=("User-Agent",))


async def call(http: aiohttp.ClientSession, method: str, url: str | URL, *, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request to a peer: (status, body), the body as bytes (passed on or parsed once by the
    caller). A peer that does not answer (refused, reset, timed out) raises UPSTREAM_UNAVAILABLE."""
    try:
        async with http.request(method, url, data=body, headers=headers) as response:
            return response.status, await response.read()
    except PeerErrors:
        raise ApiError("UPSTREAM_UNAVAILABLE") from None


def json_body(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def peer_urls(catalog: Catalog, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Peers at 127.0.0.1 on their catalog ports, unless VIGIA_PEER_<NAME> or an override says otherwise."""
    urls = {c.name: os.environ.get(f"VIGIA_PEER_{c.name.upper()}", f"http://127.0.0.1:{c.port}") for c in catalog.components}
    urls.update(overrides or {})
    return urls


def make_app(catalog: Catalog, component: str, data_dir: Path, node: str, admin_token: str | None,
             title: str) -> tuple[FastAPI, Observability]:
    """The app, its Observability, `app.state.http` (the shared client, from startup to shutdown) and
    `app.state.background`: coroutine functions that run as tasks from startup to shutdown
    (cancelled, with the health checks, before the client closes)."""
    obs = Observability.from_catalog(catalog, component, Path(data_dir), node,
                                     signing_keys_dir=Path(data_dir) / "keys")
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.http = None
    app.state.background = []
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        app.state.http = new_session()
        tasks.extend(asyncio.create_task(run()) for run in app.state.background)

    async def stop() -> None:
        await obs.health.stop()  # its checks use the client; instrument() would stop it later
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if app.state.http is not None:
            await app.state.http.close()

    # Registered before instrument()'s: the client exists before the health checks start, and
    # closes before the logs and trails do.
    app.router.on_startup.append(start)
    app.router.on_shutdown.append(stop)
    instrument(app, obs, admin_token=admin_token)
    return app, obs


def _failure(exc: BaseException) -> str:
    """A peer call's failure in words that do not depend on the HTTP client library."""
    if isinstance(exc, TimeoutError):
        return "Timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    return type(exc).__name__


def add_peer_checks(app: FastAPI, obs: Observability, peers: dict[str, str]) -> None:
    """Readiness depends on each peer being alive (its liveness, not its readiness: one peer's
    missing dependency must not ripple through every service). Run in the background by
    `obs.health`; `/_health` reads the last answer."""
    for name, url in peers.items():
        probe = URL(f"{url}/_health?probe=live")

        async def alive(probe: URL = probe) -> tuple[bool, str]:
            try:
                async with app.state.http.get(probe, timeout=CHECK_TIMEOUT) as response:
                    status = response.status
                    await response.read()
            except PeerErrors as exc:
                return False, f"unreachable ({_failure(exc)})"
            return status == 200, f"HTTP {status}"

        obs.health.add_async_check(name, alive)


def downstream_headers(tenant: str | None = None) -> dict[str, str]:
    """Correlation id, W3C traceparent and tenant passed to the next hop."""
    ctx = current()
    if ctx is None:
        return {}
    headers = {"x-correlation-id": ctx.correlation_id,
               "traceparent": f"00-{ctx.trace_id}-{os.urandom(8).hex()}-01",
               "x-tenant": tenant or ctx.tenant}
    if ctx.session_id:
        headers["x-session-id"] = ctx.session_id
    return headers


def downstream_error(status: int, body: bytes, errors: ErrorTokens) -> ApiError | None:
    """A peer's answer >= 400 as our ApiError, or None.

    Its ErrorToken envelope is relayed as is (retry_after_ms included), so a client's mistake stays
    a 4xx and never burns our availability SLO. Without an envelope, a 4xx keeps the token of its
    status (INVALID_ARGUMENT if that token needs a retry_after_ms the peer did not give) and a 5xx
    is UPSTREAM_UNAVAILABLE.
    """
    if status < 400:
        return None
    try:
        envelope = json.loads(body)["error"]
        return _valid(ApiError(envelope["token"], retry_after_ms=envelope.get("retry_after_ms")), errors)
    except (ValueError, KeyError, TypeError):
        pass
    if status >= 500:
        return ApiError("UPSTREAM_UNAVAILABLE")
    try:
        return _valid(ApiError(errors.token_for(status)), errors)
    except ValueError:
        return ApiError("INVALID_ARGUMENT")


def _valid(error: ApiError, errors: ErrorTokens) -> ApiError:
    errors.check(error)  # ValueError: outside the vocabulary, or missing its retry_after_ms
    return error


@lru_cache(maxsize=1024)
def peer_url(text: str) -> URL:
    """A fixed peer URL (no ids in it), parsed once."""
    return URL(text)


@lru_cache(maxsize=1024)
def _eval_request(tenant: str, bucket: str) -> bytes:
    return json_body({"tenant": tenant, "bucket": bucket})


async def ask_policy(http: aiohttp.ClientSession, policy_url: str, tenant: str, bucket: str) -> None:
    """Returns when policy allows; otherwise raises its decision as an ErrorToken, with policy's
    retry_after_ms. Policy failing to answer, or answering something else, is UPSTREAM_UNAVAILABLE."""
    headers = downstream_headers(tenant)
    headers["content-type"] = JSON
    status, body = await call(http, "POST", peer_url(f"{policy_url}/v1/eval"), body=_eval_request(tenant, bucket),
                              headers=headers)
    if status != 200:
        raise ApiError("UPSTREAM_UNAVAILABLE")
    try:
        answer = json.loads(body)
        decision = answer["decision"]
        retry_after_ms = answer["retry_after_ms"] if decision in ("backpressure", "rate_limit") else None
    except (ValueError, KeyError, TypeError):
        raise ApiError("UPSTREAM_UNAVAILABLE") from None
    if decision == "backpressure":
        raise ApiError("BACKPRESSURE", retry_after_ms=retry_after_ms)
    if decision == "rate_limit":
        raise ApiError("RATE_LIMIT", retry_after_ms=retry_after_ms)
    if decision == "deny":
        raise ApiError("FORBIDDEN")
