"""Write a spool the way services do (the collectors library), on chosen past days."""

from __future__ import annotations

from pathlib import Path

from collectors.flags import Flags
from collectors.logger import ServerBlindLogger
from collectors.sampling import Sampler
from collectors.trails import TrailWriter

DAY = 86400


def write_spool(catalog, spool: Path, days: list[int], per_day: int = 50, node: str = "n1") -> dict:
    """Logs and trails for each day offset (days before now, e.g. [2, 1]); returns line counts."""
    import time
    counts = {"logs": 0, "audit": 0}
    base = (int(time.time()) // DAY) * DAY
    for offset in days:
        start = base - offset * DAY + 3600
        now = [start]
        logger = ServerBlindLogger(catalog, "gateway", node, spool, Sampler(catalog.logs.sampling, Flags(sampling_success=1.0)),
                                   clock=lambda: now[0])
        trails = TrailWriter(catalog, "office", node, spool, clock=lambda: now[0])
        for i in range(per_day):
            now[0] = start + i * 7.5
            logger.write({"tenant": catalog.tenants[i % len(catalog.tenants)], "route": "/v1/items", "method": "GET",
                          "ok": i % 10 != 0, "code": 500 if i % 10 == 0 else 200, "latency_ms": 5 + i % 40,
                          "correlation_id": f"c{offset}x{i}", "session_id": f"s{i % 7}"})
            trails.append("office.tool_call", scope="office", actor=catalog.tenants[0], refs=[f"c{offset}x{i}"],
                          data={"tool": "search_docs", "args_min": {"items": i}, "cost": 1})
        logger.close()
        trails.close()
        counts["logs"] += per_day
        counts["audit"] += per_day
    return counts
