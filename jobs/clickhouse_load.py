"""Load a day's NDJSON objects into ClickHouse silver tables, exactly once, atomically.

Wire format: raw NDJSON -> `INSERT ... FORMAT JSONEachRow` (no per-row Python parsing on the
good path), unknown keys and wrong types rejected by ClickHouse itself. A rejected object is
then checked line by line: bad lines go to the quarantine table with the reason, good ones are
inserted. Each object lands in a staging table with its provenance (`_file`, `_line`); when the
staging row count equals the manifest's lines minus quarantined, the day's partitions replace
the silver ones (`REPLACE PARTITION`), the ledger records each object, and the day's gold hourly
rows are recomputed the same way. A re-run finds every object in the ledger and loads nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone

from collectors.logger import check_value
from infra import clickhouse
from vigia import conventions as names
from vigia.model import Catalog

TABLES = {"logs": names.LOGS_TABLE, "audit": names.TRAILS_TABLE}
STRICT = {"input_format_skip_unknown_fields": 0, "input_format_allow_errors_num": 0,
          "date_time_input_format": "best_effort"}
TRAIL_KEYS = ("id", "ts", "kind", "scope", "actor", "refs", "data", "meta", "sig")


@dataclass(frozen=True)
class LoadObject:
    key: str
    sha256: str
    lines: int
    data: bytes


@dataclass(frozen=True)
class LoadResult:
    rows: int
    quarantined: int
    skipped: bool


class LoadError(RuntimeError):
    """The day could not be loaded consistently; nothing was replaced."""


def ensure_schema(client, catalog: Catalog) -> None:
    for statement in clickhouse.statements(catalog, "local"):
        client.command(statement)
    db = catalog.storage.clickhouse_database
    for table in (*TABLES.values(), names.GOLD_HOURLY_TABLE, names.GOLD_TRAILS_HOURLY_TABLE):
        client.command(f"CREATE TABLE IF NOT EXISTS {db}.{table}_staging AS {db}.{table}")
        client.command(f"CREATE TABLE IF NOT EXISTS {db}.{table}_raw AS {db}.{table} ENGINE = TinyLog")


def _columns(client, table: str) -> list[str]:
    return [r[0] for r in client.query(f"SELECT name FROM system.columns WHERE database || '.' || table = '{table}' "
                                       "ORDER BY position").result_rows]


def bad_line_reason(catalog: Catalog, kind: str, line: bytes) -> str | None:
    """Why one NDJSON line may not be loaded, or None."""
    try:
        record = json.loads(line)
    except ValueError:
        return "not JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    if kind == "audit":
        if list(record) != list(TRAIL_KEYS):
            return "trail keys are not id, ts, kind, scope, actor, refs, data, meta, sig"
        return None
    fields = catalog.logs.fields
    for key, value in record.items():
        if key not in fields:
            return f"field {key!r} is not in the catalog"
        reason = check_value(fields[key], value, catalog.logs.max_value_length)
        if reason:
            return f"field {key!r}: {reason}"
    if "ts" not in record:
        return "no ts"
    return None


def load_day(client, catalog: Catalog, kind: str, day: str, objects: list[LoadObject], fault=None) -> LoadResult:
    db = catalog.storage.clickhouse_database
    table = f"{db}.{TABLES[kind]}"
    ensure_schema(client, catalog)
    loaded = {(r[0], r[1]) for r in client.query(
        f"SELECT object_key, sha256 FROM {db}.{names.LEDGER_TABLE} FINAL WHERE kind = %(k)s AND day = %(d)s",
        parameters={"k": kind, "d": day}).result_rows}
    if objects and all((o.key, o.sha256) in loaded for o in objects):
        return LoadResult(0, 0, True)
    columns = _columns(client, table)
    data_columns = [c for c in columns if c not in ("_file", "_line")]
    client.command(f"TRUNCATE TABLE {table}_staging")
    client.command(f"ALTER TABLE {db}.{names.QUARANTINE_TABLE} DELETE WHERE day = %(d)s AND kind = %(k)s "
                   f"SETTINGS mutations_sync = 2", parameters={"d": day, "k": kind})
    quarantined: dict[str, int] = {}
    for obj in objects:
        client.command(f"TRUNCATE TABLE {table}_raw")
        try:
            client.raw_insert(f"{table}_raw", column_names=data_columns, insert_block=obj.data,
                              fmt="JSONEachRow", settings=STRICT)
        except Exception:  # noqa: BLE001 - ClickHouse refused the object: find the bad lines
            client.command(f"TRUNCATE TABLE {table}_raw")
            good, bad = _split_lines(catalog, kind, obj.data)
            quarantined[obj.key] = len(bad)
            if bad:
                client.insert(f"{db}.{names.QUARANTINE_TABLE}", [[date.fromisoformat(day), kind, obj.key, n,
                                                                   raw.decode("utf-8", "replace"), why]
                                                                  for n, raw, why in bad],
                              column_names=["day", "kind", "file", "line", "raw", "reason"])
            if good:
                client.raw_insert(f"{table}_raw", column_names=data_columns, insert_block=b"\n".join(good) + b"\n",
                                  fmt="JSONEachRow", settings=STRICT)
        client.command(f"INSERT INTO {table}_staging ({', '.join(columns)}) SELECT {', '.join(data_columns)}, "
                       f"%(key)s, rowNumberInAllBlocks() + 1 FROM {table}_raw SETTINGS max_threads = 1",
                       parameters={"key": obj.key})
        if fault:
            fault("clickhouse-object")
    expected = sum(o.lines for o in objects) - sum(quarantined.values())
    rows = client.query(f"SELECT count() FROM {table}_staging").result_rows[0][0]
    if rows != expected:
        raise LoadError(f"{kind} {day}: staging holds {rows} rows, the manifest says {expected}")
    _replace_partitions(client, table, day)
    if fault:
        fault("clickhouse-replaced")
    now = datetime.now(timezone.utc)
    client.insert(f"{db}.{names.LEDGER_TABLE}",
                  [[kind, date.fromisoformat(day), o.key, o.sha256, o.lines, o.lines - quarantined.get(o.key, 0),
                    quarantined.get(o.key, 0), now]
                   for o in objects],
                  column_names=["kind", "day", "object_key", "sha256", "lines", "rows", "quarantined", "loaded_at"])
    refresh_gold(client, catalog, kind, day)
    return LoadResult(rows, sum(quarantined.values()), False)


def _split_lines(catalog: Catalog, kind: str, data: bytes) -> tuple[list[bytes], list[tuple[int, bytes, str]]]:
    good, bad = [], []
    for number, line in enumerate(data.splitlines(), start=1):
        reason = bad_line_reason(catalog, kind, line)
        if reason:
            bad.append((number, line, reason))
        else:
            good.append(line)
    return good, bad


def _replace_partitions(client, table: str, day: str) -> None:
    """Each partition the staging holds replaces silver's atomically; an emptied day is dropped."""
    db, name = table.split(".")
    staged = {r[0] for r in client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = %(db)s AND table = %(t)s AND active",
        parameters={"db": db, "t": f"{name}_staging"}).result_rows}
    for partition in sorted(staged):
        client.command(f"ALTER TABLE {table} REPLACE PARTITION ID '{partition}' FROM {table}_staging")
    if day.replace("-", "") not in staged:
        client.command(f"ALTER TABLE {table} DROP PARTITION ID '{day.replace('-', '')}'")


GOLD_QUERIES = {
    "logs": (names.GOLD_HOURLY_TABLE,
             "SELECT toStartOfHour(ts) AS hour, component, route, count(), countIf(ok = false), quantile(0.5)(latency_ms), "
             "quantile(0.95)(latency_ms), quantile(0.99)(latency_ms) FROM {db}.{silver} WHERE toDate(ts) = %(d)s "
             "GROUP BY hour, component, route"),
    "audit": (names.GOLD_TRAILS_HOURLY_TABLE,
              "SELECT toStartOfHour(ts) AS hour, kind, scope, count(), countIf(sig != '') FROM {db}.{silver} "
              "WHERE toDate(ts) = %(d)s GROUP BY hour, kind, scope"),
}


def refresh_gold(client, catalog: Catalog, kind: str, day: str) -> None:
    """The day's hourly aggregates: requests, errors and latency quantiles per component and route
    for logs; records and signed records per trail kind and scope for audit."""
    db = catalog.storage.clickhouse_database
    table, query = GOLD_QUERIES[kind]
    gold = f"{db}.{table}"
    client.command(f"TRUNCATE TABLE {gold}_staging")
    client.command(f"INSERT INTO {gold}_staging " + query.format(db=db, silver=TABLES[kind]), parameters={"d": day})
    _replace_partitions(client, gold, day)
