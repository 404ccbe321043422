"""Pure ASGI middleware: ids, metrics, one server-blind log record and ErrorTokens per request.

Not Starlette's BaseHTTPMiddleware, which wraps every response in a stream and halves
throughput. The hot path does a few dict lookups, two metric updates and, for the 1 % of
successful requests sampling keeps, one log write.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import traceback

from starlette.routing import Match

from collectors import context
from collectors.errortoken import ApiError
from vigia import conventions as names

CORRELATION_HEADER = b"x-correlation-id"
TENANT_HEADER = b"x-tenant"
SESSION_HEADER = b"x-session-id"


def parse_traceparent(value: str) -> str:
    """W3C traceparent `00-<32 hex trace id>-<16 hex span id>-<flags>` -> the trace id, or ''."""
    parts = value.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        try:
            int(parts[1], 16)
            return parts[1]
        except ValueError:
            return ""
    return ""


def report_unhandled(exc: BaseException, correlation: str) -> None:
    """One stderr line for the operator: type and where, never the message (it may hold data)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f"{frame.filename}:{frame.lineno} in {frame.name}" if frame else "?"
    print(f"vigia: unhandled {type(exc).__name__} at {where} (correlation_id={correlation})", file=sys.stderr)


class VigiaMiddleware:
    def __init__(self, app, obs, router=None):
        self.app = app
        self.obs = obs
        self.router = router  # to name the route of a request an injected fault answers before routing
        catalog = obs.catalog
        self.requests = catalog.http_metric(obs.component, "requests").name
        self.duration = catalog.http_metric(obs.component, "duration").name
        self.codes = frozenset(catalog.label_sets["code"])
        self.methods = frozenset(catalog.label_sets["method"])
        self.tenants = frozenset(catalog.tenants)
        self.id_chars = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
        self._counters: dict[tuple[str, str, int], object] = {}
        self._histograms: dict[str, object] = {}

    def _counter(self, route: str, method: str, status: int):
        key = (route, method, status)
        child = self._counters.get(key)
        if child is None:
            code = str(status)
            if code not in self.codes:  # an unlisted status counts in its class, else as 500
                status_class = f"{status // 100}00"
                code = status_class if status_class in self.codes else "500"
            child = self._counters[key] = self.obs.metrics.labels(self.requests, route=route, method=method, code=code)
        return child

    def _histogram(self, route: str):
        child = self._histograms.get(route)
        if child is None:
            child = self._histograms[route] = self.obs.metrics.labels(self.duration, route=route)
        return child

    def _clean_id(self, value: bytes) -> str:
        text = value.decode("latin-1")[:64]
        return text if text and set(text) <= self.id_chars else ""

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        correlation = trace_id = session = ""
        tenant = names.OTHER_TENANT
        bytes_in = 0
        for key, value in scope["headers"]:
            if key == CORRELATION_HEADER:
                correlation = self._clean_id(value)
            elif key == b"traceparent":
                trace_id = parse_traceparent(value.decode("latin-1"))
            elif key == TENANT_HEADER:
                text = value.decode("latin-1")
                tenant = text if text in self.tenants else names.OTHER_TENANT
            elif key == SESSION_HEADER:
                session = self._clean_id(value)
            elif key == b"content-length":
                bytes_in = int(value) if value.isdigit() else 0
        if not trace_id:
            trace_id = f"{random.getrandbits(128):032x}"  # as OpenTelemetry's RandomIdGenerator: no syscall
        if not correlation:
            correlation = trace_id[:16]
        ctx = context.RequestContext(correlation, trace_id, tenant, names.UNMATCHED_ROUTE, session)
        token = context.bind(ctx)
        state = {"status": 500, "started": False, "bytes_out": 0, "err": ""}
        echo = (CORRELATION_HEADER, correlation.encode())

        async def send_wrapper(message):
            kind = message["type"]
            if kind == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message = dict(message, headers=list(message.get("headers", [])) + [echo])
            elif kind == "http.response.body":
                state["bytes_out"] += len(message.get("body", b""))
            await send(message)

        flags = self.obs.flags
        span = self.obs.otlp.start_span(scope, trace_id) if self.obs.otlp is not None else None
        # Injected faults never touch the debug endpoints: /_flags must stay reachable to end them.
        faults = (flags.chaos or flags.inject_5xx or flags.inject_latency) and not scope["path"].startswith("/_")
        try:
            if faults and flags.chaos and random.random() < 0.01:
                await asyncio.sleep(random.uniform(0.120, 0.300))
            if faults and flags.inject_latency and random.random() < flags.inject_latency:
                await asyncio.sleep(random.uniform(0.400, 0.600))
            if faults and flags.inject_5xx and scope["type"] == "http" and random.random() < flags.inject_5xx:
                self._match_route(scope)
                raise ApiError("INTERNAL")
            await self.app(scope, receive, send_wrapper)
        except ApiError as error:
            state["err"] = error.token
            await self._error(scope, send_wrapper, state, error, correlation)
        except Exception as exc:  # noqa: BLE001 - never a stack trace to the client
            report_unhandled(exc, correlation)
            state["err"] = "INTERNAL"
            await self._error(scope, send_wrapper, state, ApiError("INTERNAL"), correlation)
        finally:
            context.reset(token)
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", names.UNMATCHED_ROUTE)
            self._record(scope, route, state, start, ctx, bytes_in, span)

    def _match_route(self, scope) -> None:
        """Set scope["route"] as routing would, so an answer given before routing keeps its route label."""
        for route in getattr(self.router, "routes", ()):
            if route.matches(scope)[0] == Match.FULL:
                scope["route"] = route
                return

    async def _error(self, scope, send, state, error: ApiError, correlation: str) -> None:
        if state["started"] or scope["type"] != "http":
            return
        try:
            status, headers, body = self.obs.errors.response(error, correlation)
        except ValueError as exc:  # a token outside the vocabulary, or without its retry_after_ms
            print(f"vigia: {exc} (correlation_id={correlation}); answered INTERNAL", file=sys.stderr)
            state["err"] = "INTERNAL"
            status, headers, body = self.obs.errors.response(ApiError("INTERNAL"), correlation)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope, route, state, start, ctx, bytes_in, span) -> None:
        elapsed = time.perf_counter() - start
        method = scope.get("method", "GET")
        if method not in self.methods:  # clients choose methods; the label set is closed
            method = names.OTHER_METHOD
        if scope["type"] == "websocket":
            status = 101
        else:
            status = state["status"]
            self._counter(route, method, status).inc()
            self._histogram(route).observe(elapsed)
        ok = status < 400
        latency_ms = int(elapsed * 1000)
        if span is not None:
            self.obs.otlp.end_span(span, route, method, status)
        self.obs.remember_trace(ctx.trace_id, (ctx.correlation_id, route, method, status, latency_ms))
        if not self.obs.logger.keep(ctx.correlation_id, ok, route, ctx.tool):
            return
        # The tenant as the handler established it (the gateway from the verified JWT), not as claimed.
        self.obs.logger.write({
            "tenant": ctx.tenant, "route": route, "method": method, "tool": ctx.tool or None, "ok": ok,
            "err_token": state["err"] or None, "code": status, "latency_ms": latency_ms, "bytes_in": bytes_in,
            "bytes_out": state["bytes_out"], "correlation_id": ctx.correlation_id, "trace_id": ctx.trace_id,
            "session_id": ctx.session_id or None,
        })
