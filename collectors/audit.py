"""Seed 001's habits, server-blind: an audit decorator and a slow-operation warning."""

from __future__ import annotations

import functools
import inspect
import time
from contextlib import contextmanager

from collectors import context


def audited(obs, kind: str, data_of):
    """Write a trail of `kind` after the decorated call succeeds.

    `data_of(result, *args, **kwargs) -> dict` picks the trail's minimal data (ids, types,
    counters): the decorator never copies arguments into the trail on its own.
    """
    def wrap(fn):
        def write(result, args, kwargs):
            ctx = context.current()
            obs.trails.append(kind, scope=obs.component, actor=(ctx.tenant if ctx else "system"),
                              refs=[ctx.correlation_id] if ctx else [], data=data_of(result, *args, **kwargs),
                              tenant=ctx.tenant if ctx else None)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_inner(*args, **kwargs):
                result = await fn(*args, **kwargs)
                write(result, args, kwargs)
                return result
            return async_inner

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            result = fn(*args, **kwargs)
            write(result, args, kwargs)
            return result
        return inner
    return wrap


@contextmanager
def slow(obs, operation: str, threshold_ms: int, **fields):
    """Count, and keep one server-blind record of (never sampled out), an operation that ran too long.

    The record says what happened: `ok` is false only if the block raised.
    """
    start = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        elapsed_ms = int((time.perf_counter() - start) * 1000)
        if elapsed_ms >= threshold_ms:
            obs.metrics.labels("vigia_slow_operations_total", operation=operation).inc()
            ctx = context.current()
            obs.logger.write({"ok": ok, "latency_ms": elapsed_ms, "correlation_id": ctx.correlation_id if ctx else None,
                              "route": ctx.route if ctx else None, **fields})
