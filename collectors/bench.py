"""Benchmarks of the library, each a ratio against a baseline measured in the same run.

overhead: req/s of a trivial FastAPI endpoint with the full middleware vs the same app bare (and
          vs prometheus-fastapi-instrumentator, measured in the same run for comparison); the
          server runs pinned to core 0, the load generator in another process on core 1.
logger:   records/s written with every record kept vs stdlib logging + seed 001's JSON formatter.
trails:   chained, hashed records/s unsigned and signed; verification/s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path

from vigia.model import Catalog

RECORD = {"tenant": "acme", "route": "/v1/items/{item_id}", "method": "GET", "ok": True, "code": 200,
          "latency_ms": 12, "bytes_in": 0, "bytes_out": 512, "correlation_id": "4bf92f3577b34da6",
          "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "session_id": "s-42"}


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > core:
        os.sched_setaffinity(0, {core})


# ---- overhead ---------------------------------------------------------------------------------

# What serves the trivial endpoint: nothing, vigia's middleware, or a popular alternative for comparison.
SERVERS = ("bare", "vigia", "instrumentator")


def _serve(catalog: Catalog, kind: str, port: int, data_dir: str) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from collectors import Observability, instrument

    _pin(0)
    app = FastAPI()

    @app.get("/v1/items")
    async def items():
        return PlainTextResponse("ok")

    if kind == "vigia":
        instrument(app, Observability.from_catalog(catalog, "core", Path(data_dir)))
    elif kind == "instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator
        Instrumentator().instrument(app).expose(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


async def _load(port: int, seconds: float, connections: int) -> int:
    request = b"GET /v1/items HTTP/1.1\r\nHost: bench\r\nx-tenant: acme\r\n\r\n"
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return done


def _load_process(port: int, seconds: float, connections: int, out) -> None:
    _pin(1)
    out.put(asyncio.run(_load(port, seconds, connections)))


def _wait_port(port: int, timeout: float = 20.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"benchmark server on port {port} did not start")


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): what a request costs, whatever the steal."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(ctx, catalog: Catalog, kind: str, data_dir: str, seconds: float, connections: int) -> tuple[float, float]:
    """(req/s, server CPU microseconds per request) of one fresh server under load from the other core."""
    port = _free_port()
    server = ctx.Process(target=_serve, args=(catalog, kind, port, data_dir), daemon=True)
    server.start()
    try:
        _wait_port(port)
        asyncio.run(_load(port, 0.5, connections))  # warm-up
        queue = ctx.Queue()
        loader = ctx.Process(target=_load_process, args=(port, seconds, connections, queue))
        cpu_before = _cpu_seconds(server.pid)
        loader.start()
        count = queue.get(timeout=seconds + 30)
        cpu = _cpu_seconds(server.pid) - cpu_before
        loader.join()
    finally:
        server.terminate()
        server.join()
    return count / seconds, cpu / count * 1e6


def bench_overhead(catalog: Catalog, rounds: int = 6, seconds: float = 4.0, connections: int = 16, progress=print) -> dict:
    """The bare app, vigia's middleware and prometheus-fastapi-instrumentator, each round in an order
    that alternates (so a drift of the machine's speed during the run weighs on all); a ratio is the
    median of each round's instrumented/bare pair."""
    ctx = multiprocessing.get_context("spawn")
    rps: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    cpu: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    with tempfile.TemporaryDirectory() as data_dir:
        for round_no in range(rounds):
            for kind in SERVERS if round_no % 2 == 0 else reversed(SERVERS):
                rate, cost = _measure(ctx, catalog, kind, data_dir, seconds, connections)
                rps[kind].append(rate)
                cpu[kind].append(cost)
                progress(f"round {round_no + 1}/{rounds} {kind}: {rate:,.0f} req/s, {cost:.0f} us CPU/request")
    ratio = {kind: statistics.median(i / b for i, b in zip(rps[kind], rps["bare"])) for kind in SERVERS[1:]}
    median_cpu = {kind: statistics.median(cpu[kind]) for kind in SERVERS}
    return {"bench": "overhead", "bare_rps": round(statistics.median(rps["bare"])),
            "instrumented_rps": round(statistics.median(rps["vigia"])), "ratio": round(ratio["vigia"], 3),
            "overhead_pct": round((1 - ratio["vigia"]) * 100, 1),
            "instrumentator_overhead_pct": round((1 - ratio["instrumentator"]) * 100, 1),
            "bare_cpu_us_per_request": round(median_cpu["bare"], 1),
            "middleware_cpu_us_per_request": round(median_cpu["vigia"] - median_cpu["bare"], 1),
            "instrumentator_cpu_us_per_request": round(median_cpu["instrumentator"] - median_cpu["bare"], 1),
            "rounds": rounds, "goal_overhead_pct_max": 5}


# ---- logger -----------------------------------------------------------------------------------

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class StructuredFormatter(logging.Formatter):
    """Seed 001's JSON formatter, as its baseline."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"timestamp": datetime.now(timezone.utc).isoformat(), "level": record.levelname,
                "logger": record.name, "message": record.getMessage(), "request_id": _request_id.get(),
                "module": record.module, "function": record.funcName, "line": record.lineno}
        if hasattr(record, "extra_fields"):
            data.update(record.extra_fields)
        return json.dumps(data, ensure_ascii=False)


def bench_logger(catalog: Catalog, records: int = 100_000, progress=print) -> dict:
    from collectors.flags import Flags
    from collectors.logger import ServerBlindLogger
    from collectors.metrics import Metrics
    from collectors.sampling import Sampler

    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "stdlib.log")
        handler.setFormatter(StructuredFormatter())
        std = logging.getLogger("vigia.bench.stdlib")
        std.handlers[:] = [handler]
        std.propagate = False
        std.setLevel(logging.INFO)
        start = time.perf_counter()
        for _ in range(records):
            std.info("request", extra={"extra_fields": RECORD})
        stdlib_rate = records / (time.perf_counter() - start)
        handler.close()
        progress(f"stdlib logging + JSON formatter: {stdlib_rate:,.0f} records/s")

        flags = Flags(sampling_success=1.0)
        ours = ServerBlindLogger(catalog, "core", "bench", Path(tmp), Sampler(catalog.logs.sampling, flags),
                                 Metrics(catalog, "core"))
        start = time.perf_counter()
        for _ in range(records):
            ours.log(**RECORD)
        ours_rate = records / (time.perf_counter() - start)
        ours.close()
        progress(f"vigia server-blind logger: {ours_rate:,.0f} records/s")
    return {"bench": "logger", "records": records, "stdlib_per_s": round(stdlib_rate), "vigia_per_s": round(ours_rate),
            "ratio": round(ours_rate / stdlib_rate, 2), "goal_ratio_min": 8}


# ---- trails -----------------------------------------------------------------------------------

def bench_trails(catalog: Catalog, records: int = 20_000, progress=print) -> dict:
    from nacl.signing import SigningKey

    from collectors.trails import TrailWriter, key_id, verify_file

    data = {"tool": "search_docs", "args_min": {"doc_id": "d-1", "kind": "pdf", "count": 3}, "cost": 2}
    out: dict = {"bench": "trails", "records": records}
    with tempfile.TemporaryDirectory() as tmp:
        key = SigningKey.generate()
        for label, keys in (("unsigned", {}), ("signed", {"acme": key})):
            writer = TrailWriter(catalog, "office", label, Path(tmp), keys)
            start = time.perf_counter()
            for _ in range(records):
                writer.append("office.tool_call", scope="office", actor="acme", refs=["c-1"], data=data, tenant="acme")
            out[f"{label}_per_s"] = round(records / (time.perf_counter() - start))
            writer.close()
            progress(f"{label}: {out[f'{label}_per_s']:,} records/s")
        path = next(Path(tmp).rglob("office-signed.ndjson"))
        start = time.perf_counter()
        findings = verify_file(path, {key_id(key.verify_key): bytes(key.verify_key)})
        out["verify_per_s"] = round(records / (time.perf_counter() - start))
        out["verify_findings"] = len(findings)
        progress(f"verify (signed): {out['verify_per_s']:,} records/s, {len(findings)} findings")
    out["ratio"] = round(out["signed_per_s"] / out["unsigned_per_s"], 3)
    return out
