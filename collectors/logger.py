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
import threading
import time
from collections import deque
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
SHORT_ID = re.compile(r"[A-Za-z0-9_\-]{1,14}")  # shorter than the shortest `api_key` match (15)


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
        if not (TOKEN.fullmatch(node) and len(node) <= 64):
            raise ValueError(f"node name {node[:80]!r} must be 1-64 characters of [A-Za-z0-9_.:-] (it names files and log records)")
        self.component, self.node = component, node
        self.root = Path(data_dir) / "logs"
        self.sampler = sampler
        self.clock = clock
        self.buffer_bytes = buffer_bytes
        self.fsync_every = fsync_every
        self._head = f'"component":"{component}","node":"{node}"'
        self._fd: int | None = None
        self._day_start = self._day_end = 0.0  # the UTC day of the open file, [start, end)
        self._ms = -1
        self._prefix = ""
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._flush_due = 0.0
        self._since_sync = 0
        self._fragments: dict[tuple[str, str], str] = {}
        self._id_keys = frozenset(k for k, kind in self.fields.items() if kind == "id")
        self._int_keys = frozenset(k for k, kind in self.fields.items() if kind == "int" and k not in self.FIXED)
        self._bool_keys = frozenset(k for k, kind in self.fields.items() if kind == "bool" and k not in self.FIXED)
        self._lock = threading.Lock()
        self._metrics = metrics
        # Plain integers read at scrape time: a prometheus_client increment (a lock and a float)
        # would cost as much as a third of writing the record.
        self.counts = {"written": 0, "sampled_out": 0}
        if metrics is not None:
            metrics.count_from(names.LOG_WRITTEN_METRIC, "outcome", self.counts)

    def keep(self, correlation_id: str, ok: bool, route: str | None = None, tool: str | None = None) -> bool:
        """The sampling decision for one request's records, counted when it drops them."""
        if self.sampler.keep(correlation_id, ok, route, tool):
            return True
        self.counts["sampled_out"] += 1
        return False

    def log(self, **fields: object) -> bool:
        """Write one record if sampling keeps it; True when written."""
        get = fields.get
        correlation = get("correlation_id") or os.urandom(8).hex()
        if self.sampler.keep(str(correlation), get("ok") is not False, get("route"), get("tool")):
            return self.write(fields)
        self.counts["sampled_out"] += 1
        return False

    def write(self, fields: dict) -> bool:
        """Write a record unsampled (after the caller's own sampling decision)."""
        now = self.clock()
        ms = int(now * 1000)
        if ms != self._ms:  # records of the same millisecond share their first bytes
            self._ms = ms
            self._prefix = f'{{"ts":"{utc_ms(now)}",{self._head}'
        parts = [self._prefix]
        append, fragments, id_keys, int_keys = parts.append, self._fragments, self._id_keys, self._int_keys
        for key, value in fields.items():
            cls = value.__class__
            if cls is str:
                # Alphanumeric ids, and ids too short to be a key, cannot hold any leak pattern.
                if key in id_keys and len(value) <= self.max_len and (
                        (value.isalnum() and value.isascii()) or SHORT_ID.fullmatch(value)):
                    append(f'"{key}":"{value}"')
                elif (fragment := fragments.get((key, value))) is not None:
                    append(fragment)
                else:
                    fragment = self._validate(key, value)
                    if fragment is not None:
                        append(fragment)
            elif cls is int:
                if key in int_keys:
                    append(f'"{key}":{value}')
                else:
                    self._drop(self._reason(key))
            elif cls is bool and key in self._bool_keys:
                append('"%s":%s' % (key, "true" if value else "false"))
            elif value is not None:
                self._drop(self._reason(key))
            elif key not in self.fields:
                self._drop("unknown_field")
        self._append((",".join(parts) + "}\n").encode(), now)
        return True

    def _reason(self, key: str) -> str:
        """Why a value of the wrong type is dropped."""
        if key not in self.fields:
            return "unknown_field"
        return "reserved" if key in self.FIXED else "type"

    def _validate(self, key: str, value: str) -> str | None:
        """`"key":"value"` when the string may be written in this field, else None (counted).

        Routes, tokens and tenants repeat, so their fragment is remembered; ids are unique per request.
        """
        kind = self.fields.get(key)
        if kind is None or key in self.FIXED or kind in ("bool", "int"):
            self._drop(self._reason(key))
            return None
        reason = check_value(kind, value, self.max_len)
        if reason:
            self._drop(reason)
            return None
        # Validated strings hold only [A-Za-z0-9_.:/{}-]: nothing JSON needs to escape.
        fragment = f'"{key}":"{value}"'
        if kind != "id":
            if len(self._fragments) >= self.CACHE_LIMIT:
                self._fragments.clear()
            self._fragments[(key, value)] = fragment
        return fragment

    def _append(self, line: bytes, now: float) -> None:
        # Lock-free: deque.append is atomic, and only flushes and day changes take the lock.
        if not self._day_start <= now < self._day_end:
            self._roll(now)
        self._buffer.append(line)
        self._buffered += len(line)  # approximate under threads; it only decides when to flush
        if self._buffered >= self.buffer_bytes or now >= self._flush_due:
            self.flush(now)

    def _roll(self, now: float) -> None:
        """Open the file of `now`'s UTC day, after flushing the previous day's records into theirs."""
        with self._lock:
            if self._day_start <= now < self._day_end:
                return
            self._flush(now)
            self._close_file()
            day_start = int(now) // 86400 * 86400
            path = self.root / time.strftime("%Y/%m/%d", time.gmtime(day_start)) / f"{self.component}-{self.node}.ndjson"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._day_start, self._day_end = day_start, day_start + 86400

    def flush(self, now: float | None = None) -> None:
        """Append buffered records, whole lines only, in one write."""
        with self._lock:
            self._flush(now)

    def _flush(self, now: float | None) -> None:
        buffer = self._buffer
        count = len(buffer)  # exactly these: records appended meanwhile wait for the next flush
        if count and self._fd is not None:
            data = memoryview(b"".join([buffer.popleft() for _ in range(count)]))
            while data:  # a short write (a signal, a full disk's last bytes) continues, never leaves half a line
                data = data[os.write(self._fd, data):]
            self.counts["written"] += count
            if self.fsync_every:
                self._since_sync += count
                if self._since_sync >= self.fsync_every:
                    os.fsync(self._fd)
                    self._since_sync = 0
        self._buffered = 0
        self._flush_due = (self.clock() if now is None else now) + 1.0

    def _close_file(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self._day_start = self._day_end = 0.0

    def _drop(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.labels(names.LOG_DROPPED_METRIC, reason=reason).inc()

    def close(self) -> None:
        with self._lock:
            self._flush(None)
            self._close_file()
