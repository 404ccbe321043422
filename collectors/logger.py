"""Server-blind NDJSON logger (seed 004 §2).

Wire format: one JSON object per line, keys only from the catalog's closed field list, UTF-8,
no insignificant whitespace. A key outside the list, or a value that breaks its field's rule
(wrong type, too long, looks like an e-mail, a token, a key), is dropped and counted in
`vigia_log_dropped_total{reason}`, never written.

Files: `{data_dir}/logs/yyyy/mm/dd/{component}-{node}.ndjson`, one per UTC day, opened with
`O_APPEND`. Records are buffered and appended whole: every `os.write` carries only complete
lines, so several processes appending to one file never interleave inside a line (Linux
appends each write whole at the end of a local file). Flush policy: the buffer is written when
it reaches 64 KiB, when a record arrives 1 s or more after the last flush, on `flush()` (the
ASGI integration calls it every second) and on `close()`, which also fsyncs. So a crash loses at
most about a second of records; set `buffer_bytes=0` to write each record at once, and
`fsync_every=N` to fsync every N records where even that is too much.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from collectors.sampling import Sampler
from vigia import conventions as names
from vigia.model import Catalog

# Values that must never be written, whatever field they arrive in.
LEAKS = {
    "email": re.compile(r"[^@\s]+@[^@\s]+\.[a-zA-Z]{2,}"),
    "jwt": re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    "bearer": re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    "private_key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "api_key": re.compile(r"(?i)(?:^|[^a-z0-9])(sk|pk|rk|ak|api|key|token|secret)[_-][A-Za-z0-9_-]{12,}"),
    "blob": re.compile(r"[A-Za-z0-9+/=_-]{48,}"),
}
TOKEN = re.compile(r"[A-Za-z0-9_.:\-]+")
ROUTE = re.compile(r"(/[A-Za-z0-9_.\-{}]*)+|unmatched")
ID = re.compile(r"[A-Za-z0-9_\-]+")
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PATTERNS = {"timestamp": TS, "token": TOKEN, "route": ROUTE, "id": ID}


def utc_ms(now: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-22T13:45:01.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def check_value(kind: str, value: object, max_len: int) -> str | None:
    """None when the value may be written under this field type, else the reason it may not."""
    if kind == "bool":
        return None if isinstance(value, bool) else "type"
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "type"
    if not isinstance(value, str):
        return "type"
    if len(value) > max_len:
        return "too_long"
    if not PATTERNS[kind].fullmatch(value):
        return "pattern"
    # An id holds only [A-Za-z0-9_-]: it cannot carry an e-mail, a JWT, a bearer header or a PEM
    # key, and long random strings are what ids are; only key-shaped ids remain to rule out.
    if kind == "id":
        has_separator = "_" in value or "-" in value
        return "api_key" if has_separator and LEAKS["api_key"].search(value) else None
    for reason, leak in LEAKS.items():
        if leak.search(value):
            return reason
    return None


class ServerBlindLogger:
    FIXED = frozenset(("ts", "component", "node"))
    CACHE_LIMIT = 8192  # distinct token/route values whose verdict is remembered

    def __init__(self, catalog: Catalog, component: str, node: str, data_dir: Path, sampler: Sampler,
                 metrics=None, clock=time.time, buffer_bytes: int = 65536, fsync_every: int = 0):
        self.fields = dict(catalog.logs.fields)
        self.max_len = catalog.logs.max_value_length
        self.component, self.node = component, node
        self.root = Path(data_dir) / "logs"
        self.sampler = sampler
        self.clock = clock
        self.buffer_bytes = buffer_bytes
        self.fsync_every = fsync_every
        self._head = f'"component":"{component}","node":"{node}"'
        self._fd: int | None = None
        self._day_no = -1
        self._second = -1
        self._stamp = ""
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._last_flush = 0.0
        self._since_sync = 0
        self._verdicts: dict[tuple[str, str], str | None] = {}
        self._metrics = metrics
        self._written = self._sampled_out = None
        if metrics is not None:
            self._written = metrics.labels(names.LOG_WRITTEN_METRIC, outcome="written")
            self._sampled_out = metrics.labels(names.LOG_WRITTEN_METRIC, outcome="sampled_out")

    def log(self, **fields: object) -> bool:
        """Write one record if sampling keeps it; True when written."""
        ok = fields.get("ok", True) is not False
        correlation = fields.get("correlation_id")
        if not self.sampler.keep(str(correlation) if correlation else os.urandom(8).hex(), ok,
                                 fields.get("route"), fields.get("tool")):
            if self._sampled_out is not None:
                self._sampled_out.inc()
            return False
        return self.write(fields)

    def _verdict(self, kind: str, value: str) -> str | None:
        if kind == "id":  # unique per request: not worth remembering
            return check_value(kind, value, self.max_len)
        key = (kind, value)
        try:
            return self._verdicts[key]
        except KeyError:
            if len(self._verdicts) >= self.CACHE_LIMIT:
                self._verdicts.clear()
            verdict = self._verdicts[key] = check_value(kind, value, self.max_len)
            return verdict

    def write(self, fields: dict) -> bool:
        """Write a record unsampled (after the caller's own sampling decision)."""
        now = self.clock()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        parts = [f'{{"ts":"{self._stamp}.{int(now * 1000) % 1000:03d}Z",{self._head}']
        for key, value in fields.items():
            kind = self.fields.get(key)
            if kind is None:
                self._drop("unknown_field")
                continue
            if value is None or key in self.FIXED:
                continue
            cls = value.__class__
            if cls is str:
                reason = "type" if kind in ("bool", "int") else self._verdict(kind, value)
                if reason:
                    self._drop(reason)
                    continue
                # Validated strings hold only [A-Za-z0-9_.:/{}-]: nothing JSON needs to escape.
                parts.append(f'"{key}":"{value}"')
            elif cls is bool:
                if kind != "bool":
                    self._drop("type")
                    continue
                parts.append(f'"{key}":true' if value else f'"{key}":false')
            elif cls is int:
                if kind != "int":
                    self._drop("type")
                    continue
                parts.append(f'"{key}":{value}')
            else:
                self._drop("type")
        line = (",".join(parts) + "}\n").encode()
        self._append(line, now)
        if self._written is not None:
            self._written.inc()
        return True

    def _append(self, line: bytes, now: float) -> None:
        if int(now) // 86400 != self._day_no:
            self.flush()
            self._open(now)
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= self.buffer_bytes or now - self._last_flush >= 1.0:
            self.flush(now)

    def _open(self, now: float) -> None:
        """Open the file of `now`'s UTC day (closing the previous day's)."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
        path = self.root / time.strftime("%Y/%m/%d", time.gmtime(now)) / f"{self.component}-{self.node}.ndjson"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._day_no = int(now) // 86400

    def flush(self, now: float | None = None) -> None:
        """Append buffered records, whole lines only, in one write."""
        if self._buffer and self._fd is not None:
            os.write(self._fd, b"".join(self._buffer))
            if self.fsync_every:
                self._since_sync += len(self._buffer)
                if self._since_sync >= self.fsync_every:
                    os.fsync(self._fd)
                    self._since_sync = 0
        self._buffer.clear()
        self._buffered = 0
        self._last_flush = self.clock() if now is None else now

    def _drop(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.labels(names.LOG_DROPPED_METRIC, reason=reason).inc()

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd, self._day_no = None, -1
