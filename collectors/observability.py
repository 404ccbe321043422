"""Everything one component needs to emit what the catalog promises, built from the catalog."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from prometheus_client import CollectorRegistry

from collectors.errortoken import ErrorTokens
from collectors.flags import Flags
from collectors.health import Health
from collectors.logger import ServerBlindLogger
from collectors.metrics import Metrics
from collectors.sampling import Sampler
from collectors.trails import TrailWriter, load_signing_keys
from vigia.model import Catalog

TRACE_MEMORY = 10_000  # request metadata kept for /_trace lookups


@dataclass
class Observability:
    """Environment: OTEL_EXPORTER_OTLP_ENDPOINT (optional OTLP/HTTP export), VIGIA_* flags (see Flags)."""

    catalog: Catalog
    component: str
    node: str
    metrics: Metrics
    logger: ServerBlindLogger
    trails: TrailWriter
    flags: Flags
    health: Health
    errors: ErrorTokens
    otlp: object | None = None
    # `hook(stage)` run by /_reload in order, sync or `async def` (awaited), before its ops.reload trail.
    reload_hooks: list[Callable[[str], None | Awaitable[None]]] = field(default_factory=list)
    traces: deque = field(default_factory=lambda: deque(maxlen=TRACE_MEMORY))

    @classmethod
    def from_catalog(cls, catalog: Catalog, component: str, data_dir: Path, node: str = "n1",
                     registry: CollectorRegistry | None = None, clock: Callable[[], float] | None = None,
                     signing_keys_dir: Path | None = None, flags: Flags | None = None) -> "Observability":
        if component not in {c.name for c in catalog.components}:
            raise ValueError(f"unknown component {component!r}")
        clock = clock or time.time
        flags = flags or Flags.from_env()
        metrics = Metrics(catalog, component, registry)
        logger = ServerBlindLogger(catalog, component, node, Path(data_dir), Sampler(catalog.logs.sampling, flags),
                                   metrics, clock)
        trails = TrailWriter(catalog, component, node, Path(data_dir), load_signing_keys(signing_keys_dir),
                             metrics, clock)
        otlp = None
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from collectors.otlp import OtlpExport
            otlp = OtlpExport(component, node, metrics.registry)
        return cls(catalog, component, node, metrics, logger, trails, flags, Health(), ErrorTokens(catalog), otlp)

    def remember_trace(self, trace_id: str, metadata: tuple) -> None:
        """(correlation_id, route, method, code, latency_ms) of a request: metadata only. One append
        to a bounded deque per request; the rare `/_trace` lookup scans it, newest first."""
        self.traces.append((trace_id, metadata))

    def trace(self, trace_id: str) -> dict | None:
        found = next((metadata for known, metadata in reversed(self.traces) if known == trace_id), None)
        if found is None:
            return None
        keys = ("correlation_id", "route", "method", "code", "latency_ms")
        return {"trace_id": trace_id, "component": self.component, **dict(zip(keys, found))}

    def close(self) -> None:
        self.logger.close()
        self.trails.close()
        if self.otlp is not None:
            self.otlp.shutdown()
