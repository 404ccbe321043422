"""Deterministic sampling keyed on the correlation id (seed 004 §2.2).

The same id always gets the same decision, so every line of one request is kept or dropped
together, across processes and services. Errors are always kept. The success rate is, in order:
the catalog's per-tool or per-route override, else the `sampling_success` flag, else the
catalog's rate; the `spike` flag raises it to at least the spike rate. The `log_level` flag
filters by severity (a success is `info`, an error `error`): `debug` keeps every success,
`warning` and `error` keep errors only.
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
        level = self.flags.log_level
        if level == "debug":
            return 1.0
        if level in ("warning", "error"):
            return 0.0
        rate = self.sampling.tools.get(tool) if tool else None
        if rate is None and route:
            rate = self.sampling.routes.get(route)
        if rate is None:
            rate = self.flags.sampling_success if self.flags.sampling_success is not None else self.sampling.success
        return max(rate, self.sampling.spike) if self.flags.spike else rate

    def keep(self, correlation_id: str, ok: bool, route: str | None = None, tool: str | None = None) -> bool:
        rate = self.sampling.error if not ok else self.success_rate(route, tool)
        return rate >= 1.0 or position(correlation_id) < rate
