"""The current request's identifiers, for logs and trails written deep inside a handler."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestContext:
    correlation_id: str
    trace_id: str
    tenant: str
    route: str
    session_id: str = ""
    tool: str = ""  # set by a handler that runs an MCP tool: the log's `tool` field and its sampling override


_current: ContextVar[RequestContext | None] = ContextVar("vigia_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def bind(ctx: RequestContext):
    return _current.set(ctx)


def reset(token) -> None:
    _current.reset(token)
