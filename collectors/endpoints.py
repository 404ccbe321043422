"""`instrument(app, obs)`: the middleware plus the debug endpoints of seed 004 §5.1.

/_health (readiness by default: 503 while a dependency check fails; `?probe=live` is liveness, 200
while the process serves), /_metrics (Prometheus text), /_trace/{trace_id} (request metadata only),
/_reload?stage=next (admin token; runs `obs.reload_hooks`, sync or async, then writes an
`ops.reload` trail), /_flags (GET; POST with the admin token changes runtime flags). Validation
errors and the framework's HTTP errors are answered as ErrorTokens like everything else. On startup
a task flushes the log buffer every second and the async health checks start running in the
background; on shutdown both stop and the logs and trails are closed (fsynced).
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from collectors import context
from collectors.asgi import VigiaMiddleware
from collectors.errortoken import ApiError

ADMIN_HEADER = "x-admin-token"


def instrument(app: FastAPI, obs, admin_token: str | None = None) -> FastAPI:
    def require_admin(request: Request) -> None:
        given = request.headers.get(ADMIN_HEADER, "")
        if not admin_token or not hmac.compare_digest(given.encode(), admin_token.encode()):
            raise ApiError("UNAUTHORIZED")

    async def health(probe: Literal["live", "ready"] = "ready") -> Response:
        """Liveness (`?probe=live`) is 200 while the process serves: restarting a healthy process
        because a dependency is down would not help. Readiness (the default) is 503 while a check
        fails. Neither waits on I/O: async checks are read from their last background run."""
        if probe == "live":
            return JSONResponse({"status": "ok", "live": True})
        report = obs.health.report()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    async def metrics() -> Response:
        return Response(generate_latest(obs.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def trace(trace_id: str) -> Response:
        found = obs.trace(trace_id)
        if found is None:
            raise ApiError("NOT_FOUND")
        return JSONResponse(found)

    async def reload(request: Request, stage: str = "next") -> Response:
        require_admin(request)
        if stage != "next":
            raise ApiError("INVALID_ARGUMENT")
        for hook in obs.reload_hooks:  # in order; an async hook is awaited before the next one and the trail
            result = hook(stage)
            if inspect.isawaitable(result):
                await result
        ctx = context.current()
        obs.trails.append("ops.reload", scope=obs.component, actor="admin",
                          refs=[ctx.correlation_id] if ctx else [], data={"stage": stage})
        return JSONResponse({"reloaded": True, "stage": stage})

    async def get_flags() -> Response:
        return JSONResponse(obs.flags.as_dict())

    async def set_flags(request: Request) -> Response:
        require_admin(request)
        try:
            obs.flags.update(**(await request.json()))
        except (ValueError, TypeError):
            raise ApiError("INVALID_ARGUMENT") from None
        return JSONResponse(obs.flags.as_dict())

    # The framework's own answers (a body that fails validation, an unknown path or method) become
    # ErrorTokens too, raised to the middleware like any other: never FastAPI's `detail`, which
    # echoes the client's input back.
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        raise ApiError("INVALID_ARGUMENT")

    async def framework_error(request: Request, exc: StarletteHTTPException) -> Response:
        raise ApiError(obs.errors.token_for(exc.status_code))

    async def flush_every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            obs.logger.flush()

    tasks: list[asyncio.Task] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(flush_every_second()))
        obs.health.start()

    async def stop() -> None:
        await obs.health.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        obs.close()

    app.router.on_startup.append(start)
    app.router.on_shutdown.append(stop)
    app.add_api_route("/_health", health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/_metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route("/_trace/{trace_id}", trace, methods=["GET"], include_in_schema=False)
    app.add_api_route("/_reload", reload, methods=["POST"], include_in_schema=False)
    app.add_api_route("/_flags", get_flags, methods=["GET"], include_in_schema=False)
    app.add_api_route("/_flags", set_flags, methods=["POST"], include_in_schema=False)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, framework_error)
    app.add_middleware(VigiaMiddleware, obs=obs, router=app.router)
    return app
