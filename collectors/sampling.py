"""Deterministic sampling keyed on the correlation id (seed 004 §2.2).

The same id always gets the same decision, so every line of one request is kept or dropped
together, across processes and services. Errors are always kept. The success rate comes from
the catalog (per route or tool overrides), the `sampling_success` flag, or the spike rate.
"""

from __future__ import annotations

import zlib

from collectors.flags import Flags
from vigia.model import Sampling

SCALE = 1 << 32


def position(correlation_id: str) -> float:
    """Where an id falls in [0, 1): CRC32 spreads hex and random ids evenly and costs ~100 ns."""
    return zlib.crc32(correlation_id.encode()) / SCALE


class Sampler:
    def __init__(self, sampling: Sampling, flags: Flags):
        self.sampling = sampling
        self.flags = flags

    def success_rate(self, route: str | None = None, tool: str | None = None) -> float:
        if self.flags.spike:
            base = self.sampling.spike
        elif self.flags.sampling_success is not None:
            base = self.flags.sampling_success
        else:
            base = self.sampling.success
        override = self.sampling.tools.get(tool) if tool else None
        if override is None and route:
            override = self.sampling.routes.get(route)
        return max(base, override) if override is not None else base

    def keep(self, correlation_id: str, ok: bool, route: str | None = None, tool: str | None = None) -> bool:
        rate = self.sampling.error if not ok else self.success_rate(route, tool)
        return rate >= 1.0 or position(correlation_id) < rate
