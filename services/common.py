"""What every reference service shares: an instrumented FastAPI app, peers, one HTTP client,
background tasks, health checks that never wait on the network, and ErrorTokens across hops."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Awaitable, Callable, Literal

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from collectors import ApiError, Observability, instrument
from collectors.context import current
from collectors.errortoken import ErrorTokens
from vigia.model import Catalog

TIMEOUT = httpx.Timeout(5.0, connect=1.0)
CHECK_EVERY_S = 2.0  # how often background health checks run; /_health reports their last answer
CHECK_TIMEOUT = httpx.Timeout(0.5)

AsyncCheck = Callable[[], Awaitable[tuple[bool, str]]]


def peer_urls(catalog: Catalog, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Peers at 127.0.0.1 on their catalog ports, unless VIGIA_PEER_<NAME> or an override says otherwise."""
    urls = {c.name: os.environ.get(f"VIGIA_PEER_{c.name.upper()}", f"http://127.0.0.1:{c.port}") for c in catalog.components}
    urls.update(overrides or {})
    return urls


def make_app(catalog: Catalog, component: str, data_dir: Path, node: str, admin_token: str | None,
             title: str) -> tuple[FastAPI, Observability]:
    """The app, its Observability, and `app.state.background`: coroutine functions that run as tasks
    from startup to shutdown (cancelled before the shared HTTP client closes)."""
    obs = Observability.from_catalog(catalog, component, Path(data_dir), node,
                                     signing_keys_dir=Path(data_dir) / "keys")
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.http = None
    app.state.background = []
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        app.state.http = httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=200))
        tasks.extend(asyncio.create_task(run()) for run in app.state.background)

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app.state.http.aclose()

    # Registered before instrument() adds its own /_health, so this one answers (first match wins).
    # TODO(collectors): drop once collectors' /_health knows `probe=live`.
    async def health(probe: Literal["live", "ready"] = "ready") -> Response:
        """Liveness (`?probe=live`) is 200 while the process serves: restarting a healthy process
        because a peer is down would not help. Readiness (the default) is 503 while a dependency is down."""
        if probe == "live":
            return JSONResponse({"status": "ok", "live": True})
        report = obs.health.report()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    app.router.on_startup.append(start)
    app.router.on_shutdown.append(stop)
    app.add_api_route("/_health", health, methods=["GET"], include_in_schema=False)
    instrument(app, obs, admin_token=admin_token)
    return app, obs


def add_async_check(app: FastAPI, obs: Observability, name: str, check: AsyncCheck) -> None:
    """A health check that needs I/O, run every CHECK_EVERY_S by a background task; `/_health`
    reads its last answer, so a hung dependency never stalls the event loop or the probe."""
    last = {"answer": (False, "not checked yet")}

    async def run() -> None:
        while True:
            try:
                last["answer"] = await asyncio.wait_for(check(), CHECK_EVERY_S)
            except Exception as exc:  # noqa: BLE001 - a failing or hung check is a finding, not a dead task
                last["answer"] = (False, type(exc).__name__)
            await asyncio.sleep(CHECK_EVERY_S)

    app.state.background.append(run)
    obs.health.add_check(name, lambda: last["answer"])


def add_peer_checks(app: FastAPI, obs: Observability, peers: dict[str, str]) -> None:
    """Readiness depends on each peer being alive (its liveness, not its readiness: one peer's
    missing dependency must not ripple through every service)."""
    for name, url in peers.items():
        async def alive(url: str = url) -> tuple[bool, str]:
            try:
                status = (await app.state.http.get(f"{url}/_health", params={"probe": "live"},
                                                   timeout=CHECK_TIMEOUT)).status_code
            except httpx.HTTPError as exc:
                return False, f"unreachable ({type(exc).__name__})"
            return status == 200, f"HTTP {status}"

        add_async_check(app, obs, name, alive)


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


def downstream_error(response: httpx.Response, errors: ErrorTokens) -> ApiError | None:
    """A peer's answer >= 400 as our ApiError, or None.

    Its ErrorToken envelope is relayed as is (retry_after_ms included), so a client's mistake stays
    a 4xx and never burns our availability SLO. Without an envelope, a 4xx keeps the token of its
    status (INVALID_ARGUMENT if that token needs a retry_after_ms the peer did not give) and a 5xx
    is UPSTREAM_UNAVAILABLE.
    """
    status = response.status_code
    if status < 400:
        return None
    try:
        envelope = response.json()["error"]
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


async def ask_policy(http: httpx.AsyncClient, policy_url: str, tenant: str, bucket: str) -> None:
    """Returns when policy allows; otherwise raises its decision as an ErrorToken, with policy's
    retry_after_ms. Policy failing to answer is UPSTREAM_UNAVAILABLE."""
    try:
        r = await http.post(f"{policy_url}/v1/eval", json={"tenant": tenant, "bucket": bucket},
                            headers=downstream_headers(tenant))
    except httpx.HTTPError:
        raise ApiError("UPSTREAM_UNAVAILABLE") from None
    if r.status_code != 200:
        raise ApiError("UPSTREAM_UNAVAILABLE")
    answer = r.json()
    decision = answer["decision"]
    if decision == "backpressure":
        raise ApiError("BACKPRESSURE", retry_after_ms=answer["retry_after_ms"])
    if decision == "rate_limit":
        raise ApiError("RATE_LIMIT", retry_after_ms=answer["retry_after_ms"])
    if decision == "deny":
        raise ApiError("FORBIDDEN")
