"""What every reference service shares: an instrumented FastAPI app, peers, one HTTP client."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from fastapi import FastAPI

from collectors import ApiError, Observability, instrument
from collectors.context import current
from vigia.model import Catalog

TIMEOUT = httpx.Timeout(5.0, connect=1.0)


def peer_urls(catalog: Catalog, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Peers at 127.0.0.1 on their catalog ports, unless VIGIA_PEER_<NAME> or an override says otherwise."""
    urls = {c.name: os.environ.get(f"VIGIA_PEER_{c.name.upper()}", f"http://127.0.0.1:{c.port}") for c in catalog.components}
    urls.update(overrides or {})
    return urls


def make_app(catalog: Catalog, component: str, data_dir: Path, node: str, admin_token: str | None,
             title: str) -> tuple[FastAPI, Observability]:
    obs = Observability.from_catalog(catalog, component, Path(data_dir), node,
                                     signing_keys_dir=Path(data_dir) / "keys")
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.http = None

    async def open_client() -> None:
        app.state.http = httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=200))

    async def close_client() -> None:
        await app.state.http.aclose()

    app.router.on_startup.append(open_client)
    app.router.on_shutdown.append(close_client)
    instrument(app, obs, admin_token=admin_token)
    return app, obs


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


def raise_for_envelope(response: httpx.Response) -> None:
    """A downstream ErrorToken becomes ours, retry_after_ms included."""
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ApiError(error["token"], retry_after_ms=error.get("retry_after_ms"))
    except (ValueError, KeyError, TypeError):
        raise ApiError("UPSTREAM_UNAVAILABLE") from None


def reachable(url: str) -> tuple[bool, str]:
    """A dependency check for /_health: does the peer answer its own /_health?"""
    try:
        status = httpx.get(f"{url}/_health", timeout=0.5).status_code
    except httpx.HTTPError as exc:
        return False, f"unreachable ({type(exc).__name__})"
    return status == 200, f"HTTP {status}"
