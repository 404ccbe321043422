"""Load a day's NDJSON objects into ClickHouse silver tables, exactly once, atomically, checked
against the catalog line by line without parsing the good lines in Python (the rules, in SQL and in
Python: jobs/line_rules.py).

Per object (the fast path, all in ClickHouse):
1. the raw bytes go in as they are (`INSERT ... FORMAT LineAsString` into a one-column table:
   no line can make this insert fail), numbered in file order (`_line`, 1-based, like `splitlines`);
2. one `INSERT ... SELECT` checks every line against the catalog's rules rendered as SQL
   (`line_rules.catalog_sql`); the good lines land, typed, in the staging table with their provenance;
3. only the lines that failed are read back into Python, where the reference check
   (`line_rules.bad_line_reason`) names the reason. A line it finds valid (e.g. JSON with spaces,
   or escaped characters, that the wire format does not use) is loaded through strict
   `FORMAT JSONEachRow`, and if ClickHouse still rejects one, that line alone is quarantined with
   the error's code.

So the run never fails on data. A bad line goes to the quarantine table redacted: object key, line
number, reason, the line's top-level key names (a name that is not an identifier or looks like a
secret is replaced), and the SHA-256 of the raw line; no value is kept. The table expires like the
store's quarantine (`infra.clickhouse.ttls`: each kind as long as that kind is kept).

Per day: when the staging holds exactly the manifest's lines minus the quarantined ones, the file's
day partition replaces silver's (`REPLACE PARTITION`, atomic), then the day's gold hourly rows are
recomputed the same way, and last the ledger records each object (key + SHA-256 of its content).
A re-run finds every object in the ledger and loads nothing (`LoadResult.skipped`); a run killed
before the ledger write redoes the day, idempotently. The caller may take the ledger write out of
`load_day` (`write_ledger=False`) and call `record_loaded` after its own last step.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from infra import clickhouse
from jobs.line_rules import bad_line_reason, catalog_sql, key_names, sql_array, sql_string
from vigia import conventions as names
from vigia.model import Catalog

TABLES = {"logs": names.LOGS_TABLE, "audit": names.TRAILS_TABLE}
# Strict JSONEachRow for the lines the fast check sent back and the reference check passed.
STRICT = {"input_format_skip_unknown_fields": 0, "input_format_allow_errors_num": 0,
          "input_format_json_read_numbers_as_strings": 0, "input_format_json_read_bools_as_numbers": 0,
          "input_format_json_read_bools_as_strings": 0, "input_format_json_read_arrays_as_strings": 0,
          "input_format_null_as_default": 0, "date_time_input_format": "best_effort"}
# One stream, so the Memory table holds the lines in file order (parallel parsing may reorder blocks).
IN_ORDER = {"input_format_parallel_parsing": 0, "max_threads": 1, "max_insert_threads": 1}
# Every rule is evaluated on every line (the good ones need them all anyway): lazy evaluation of
# the many AND-ed checks recomputes shared parts per branch and is several times slower.
CHECK_SETTINGS = {"short_circuit_function_evaluation": "disable", "max_insert_threads": 2}


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
    per_object: dict[str, int] = field(default_factory=dict)  # object key -> lines quarantined


@dataclass(frozen=True)
class BadLine:
    line: int
    raw: bytes
    reason: str


class LoadError(RuntimeError):
    """The day could not be loaded consistently; nothing was replaced. Names the object."""



# ---------------------------------------------------------------- schema

def ensure_schema(client, catalog: Catalog, audit_days: int | None = None) -> None:
    """The tables of infra/clickhouse.py, the loader's work tables, and the retention policy: the
    trails' and the quarantine's TTL follow `audit_days` (clickhouse.audit_days: the catalog's
    default unless the run chose another, like the store's lifecycle)."""
    db = catalog.storage.clickhouse_database
    for statement in clickhouse.statements(catalog, "local"):
        client.command(statement)
    _migrate(client, catalog, db, _table_columns(client, db))
    existing, engines = _table_columns(client, db), _engines(client, db)
    for name, columns, clauses in clickhouse.tables(catalog):
        if name in (*TABLES.values(), names.GOLD_HOURLY_TABLE, names.GOLD_TRAILS_HOURLY_TABLE):
            # staging: the same structure, without TTL (a backfilled old day must not shrink on insert)
            staging = f"{db}.{name}_staging"
            if f"{name}_staging" in existing and existing[f"{name}_staging"] != existing[name]:
                client.command(f"DROP TABLE {staging}")
            elif " TTL " in engines.get(f"{name}_staging", ""):
                client.command(f"ALTER TABLE {staging} REMOVE TTL")
            client.command(f"CREATE TABLE IF NOT EXISTS {staging} (\n    " + ",\n    ".join(columns)
                           + f"\n) ENGINE = MergeTree {clickhouse.without_ttl(clauses)}")
    for kind, table in TABLES.items():
        client.command(f"DROP TABLE IF EXISTS {db}.{table}_raw")  # the previous loader's work table
        client.command(f"CREATE TABLE IF NOT EXISTS {db}.{table}_lines (`line` String) ENGINE = Memory")
        client.command(f"CREATE TABLE IF NOT EXISTS {db}.{table}_numbered (`n` UInt32, `line` String) ENGINE = Memory")
        client.command(f"CREATE TABLE IF NOT EXISTS {db}.{table}_slow AS {db}.{table} ENGINE = Memory")
    ttls = clickhouse.ttls(catalog, audit_days)
    for name in (names.TRAILS_TABLE, names.QUARANTINE_TABLE):
        formatted = client.query("SELECT formatQuery(%(q)s)", parameters={"q": f"SELECT {ttls[name]}"}).result_rows[0][0]
        if f"TTL {formatted.removeprefix('SELECT ')}" not in engines.get(name, ""):
            client.command(f"ALTER TABLE {db}.{name} MODIFY TTL {ttls[name]}")


def _engines(client, db: str) -> dict[str, str]:
    return dict(client.query("SELECT name, engine_full FROM system.tables WHERE database = %(db)s",
                             parameters={"db": db}).result_rows)


def _table_columns(client, db: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for table, name, ctype in client.query("SELECT table, name, type FROM system.columns WHERE database = %(db)s "
                                           "ORDER BY table, position", parameters={"db": db}).result_rows:
        out.setdefault(table, []).append((name, ctype))
    return out


def _migrate(client, catalog: Catalog, db: str, existing: dict) -> None:
    """Bring tables an earlier version created to this layout: the quarantine loses its raw lines
    (they may hold forbidden content); a gold table of another shape is rebuilt from silver."""
    quarantine = f"{db}.{names.QUARANTINE_TABLE}"
    have = {name for name, _ in existing.get(names.QUARANTINE_TABLE, [])}
    if "raw" in have:
        client.command(f"ALTER TABLE {quarantine} DROP COLUMN raw")
        for column in clickhouse.QUARANTINE_COLUMNS:
            client.command(f"ALTER TABLE {quarantine} ADD COLUMN IF NOT EXISTS {column}")
    for name, columns, _ in clickhouse.tables(catalog):
        if name not in (names.GOLD_HOURLY_TABLE, names.GOLD_TRAILS_HOURLY_TABLE) or name not in existing:
            continue
        if [n for n, _ in existing[name]] != [c.split("`")[1] for c in columns]:
            client.command(f"DROP TABLE {db}.{name}")
            client.command(f"DROP TABLE IF EXISTS {db}.{name}_staging")
            for statement in clickhouse.statements(catalog, "local"):
                client.command(statement)
            kind = "logs" if name == names.GOLD_HOURLY_TABLE else "audit"
            table, query = gold_query(catalog, kind)
            client.command(f"INSERT INTO {db}.{table} " + query.replace("WHERE toDate(ts) = {d:Date}", ""))


# ---------------------------------------------------------------- loading

def loaded_objects(client, catalog: Catalog, kind: str, day: str) -> set[tuple[str, str]]:
    """(object key, SHA-256 hex) of every object the ledger holds for the day."""
    db = catalog.storage.clickhouse_database
    return {(key, sha) for key, sha in client.query(
        f"SELECT object_key, toString(sha256) FROM {db}.{names.LEDGER_TABLE} FINAL WHERE kind = %(k)s AND day = %(d)s",
        parameters={"k": kind, "d": day}).result_rows}


def load_day(client, catalog: Catalog, kind: str, day: str, objects: list[LoadObject], fault=None,
             write_ledger: bool = True, audit_days: int | None = None) -> LoadResult:
    """Load the day's objects (all of them: the day is replaced as a whole) unless the ledger holds
    each already. With `write_ledger=False` the caller records them with `record_loaded` after its
    own last step (e.g. writing the quarantine object), so a crash before it redoes the day."""
    db = catalog.storage.clickhouse_database
    table = f"{db}.{TABLES[kind]}"
    ensure_schema(client, catalog, audit_days)
    loaded = loaded_objects(client, catalog, kind, day)
    if objects and all((o.key, o.sha256) in loaded for o in objects):
        return LoadResult(0, 0, True)
    client.command(f"TRUNCATE TABLE {table}_staging")
    bad: dict[str, list[BadLine]] = {}
    for obj in objects:
        bad[obj.key] = load_object(client, catalog, kind, day, obj)
        if fault:
            fault("clickhouse-object")
    per_object = {key: len(lines) for key, lines in bad.items()}
    staged = dict(client.query(f"SELECT _file, count() FROM {table}_staging GROUP BY _file").result_rows)
    for obj in objects:
        if staged.get(obj.key, 0) != obj.lines - per_object[obj.key]:
            raise LoadError(f"{obj.key}: staging holds {staged.get(obj.key, 0)} rows + {per_object[obj.key]} "
                            f"quarantined, the manifest says {obj.lines} lines; nothing was replaced")
    _write_quarantine(client, catalog, kind, day, bad)
    replace_day(client, table, day)
    if fault:
        fault("clickhouse-replaced")
    refresh_gold(client, catalog, kind, day)
    result = LoadResult(sum(staged.values()), sum(per_object.values()), False, per_object)
    if write_ledger:
        record_loaded(client, catalog, kind, day, objects, result)
    return result


def record_loaded(client, catalog: Catalog, kind: str, day: str, objects: list[LoadObject], result: LoadResult) -> None:
    """The ledger rows of a loaded day: the last write, so a day is skipped only once all is done."""
    if result.skipped or not objects:
        return
    now = datetime.now(timezone.utc)
    quarantined = result.per_object
    client.insert(f"{catalog.storage.clickhouse_database}.{names.LEDGER_TABLE}",
                  [[kind, date.fromisoformat(day), o.key, o.sha256, o.lines, o.lines - quarantined.get(o.key, 0),
                    quarantined.get(o.key, 0), now] for o in objects],
                  column_names=["kind", "day", "object_key", "sha256", "lines", "rows", "quarantined", "loaded_at"])


def _lines_of(data: bytes) -> bytes:
    """The object as LineAsString reads it with the lines `splitlines` counts (the manifest's)."""
    if b"\r" in data:
        return b"\n".join(data.splitlines()) + b"\n"
    return data if data.endswith(b"\n") or not data else data + b"\n"


def load_object(client, catalog: Catalog, kind: str, day: str, obj: LoadObject) -> list[BadLine]:
    """Check every line of one object and append the good ones to the staging table; the bad ones
    are returned (reason, line number) for the quarantine."""
    db = catalog.storage.clickhouse_database
    table = f"{db}.{TABLES[kind]}"
    sql = catalog_sql(catalog, kind)
    data = _lines_of(obj.data)
    for work in ("lines", "numbered"):
        client.command(f"TRUNCATE TABLE {table}_{work}")
    try:
        if data:
            client.raw_insert(f"{table}_lines", column_names=["line"], insert_block=data, fmt="LineAsString",
                              settings=IN_ORDER)
        client.command(f"INSERT INTO {table}_numbered SELECT toUInt32(rowNumberInAllBlocks() + 1), line FROM {table}_lines"
                       + _settings(IN_ORDER))
        count = client.query(f"SELECT count(), max(n) FROM {table}_numbered").result_rows[0]
        if count[0] != obj.lines or (count[0] and count[1] != obj.lines):
            raise LoadError(f"{obj.key}: ClickHouse read {count[0]} lines, the manifest says {obj.lines}")
        columns = ", ".join(f"`{c}`" for c in sql.columns)
        # the check as a column of a subquery, then a filter on it: several times faster than WHERE <rules>
        checked = (f"(SELECT n, line{', ' + sql.extract + ' AS v' if sql.extract else ''}, {sql.ok} AS _ok "
                   f"FROM {table}_numbered)")
        client.command(f"INSERT INTO {table}_staging ({columns}, _file, _line) SELECT " + ", ".join(sql.select)
                       + f", {{key:String}}, n FROM {checked} WHERE _ok" + _settings(CHECK_SETTINGS),
                       parameters={"day": day, "key": obj.key})
        staged = client.query(f"SELECT count() FROM {table}_staging WHERE _file = {{key:String}}",
                              parameters={"key": obj.key}).result_rows[0][0]
        failed = [] if staged == obj.lines else [n for (n,) in client.query(
            f"SELECT n FROM {checked} WHERE NOT _ok ORDER BY n" + _settings(CHECK_SETTINGS), parameters={"day": day}).result_rows]
    except LoadError:
        raise
    except Exception as error:  # noqa: BLE001 - not a data problem: the engine or the connection
        raise LoadError(f"{obj.key}: loading failed: {_first_line(error)}") from error
    if not failed:
        return []
    lines = data.split(b"\n")
    bad, slow = [], []
    for n in failed:
        reason = bad_line_reason(catalog, kind, lines[n - 1], day)
        if reason:
            bad.append(BadLine(n, lines[n - 1], reason))
        else:
            slow.append(n)
    if slow:
        bad += _load_slow(client, catalog, kind, obj.key, [(n, lines[n - 1]) for n in slow])
    return sorted(bad, key=lambda b: b.line)


def _settings(settings: dict) -> str:
    """A SETTINGS clause in the statement itself (per-call settings cost chDB a SET round trip each)."""
    return " SETTINGS " + ", ".join(f"{k} = {sql_string(v) if isinstance(v, str) else v}" for k, v in settings.items())


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_slow(client, catalog: Catalog, kind: str, key: str, lines: list[tuple[int, bytes]]) -> list[BadLine]:
    """Lines the reference check accepts in a form the wire format does not use: strict
    JSONEachRow, all at once, else one by one, quarantining any ClickHouse still rejects."""
    table = f"{catalog.storage.clickhouse_database}.{TABLES[kind]}"
    columns = ", ".join(f"`{c}`" for c in catalog_sql(catalog, kind).columns)

    def insert(batch):
        block = b"".join(b'{"_line":%d,' % n + line.strip()[1:] + b"\n" for n, line in batch)
        client.raw_insert(f"{table}_slow", column_names=[*catalog_sql(catalog, kind).columns, "_line"],
                          insert_block=block, fmt="JSONEachRow", settings=STRICT)

    rejected = []
    client.command(f"TRUNCATE TABLE {table}_slow")
    try:
        insert(lines)
    except Exception:  # noqa: BLE001 - find the lines ClickHouse rejects
        client.command(f"TRUNCATE TABLE {table}_slow")
        for n, line in lines:
            try:
                insert([(n, line)])
            except Exception as error:  # noqa: BLE001 - the line is quarantined, its value never kept
                code = re.search(r"Code: (\d+)", str(error))
                rejected.append(BadLine(n, line, f"ClickHouse rejected the line (code {code.group(1) if code else '?'})"))
    client.command(f"INSERT INTO {table}_staging ({columns}, _file, _line) SELECT {columns}, %(key)s, _line "
                   f"FROM {table}_slow", parameters={"key": key})
    client.command(f"TRUNCATE TABLE {table}_slow")
    return rejected


def _write_quarantine(client, catalog: Catalog, kind: str, day: str, bad: dict[str, list[BadLine]]) -> None:
    """Replace the day's quarantine rows: key names, reason, object, line, SHA-256 of the line; no value."""
    quarantine = f"{catalog.storage.clickhouse_database}.{names.QUARANTINE_TABLE}"
    if client.query(f"SELECT count() FROM {quarantine} WHERE day = %(d)s AND kind = %(k)s",
                    parameters={"d": day, "k": kind}).result_rows[0][0]:
        client.command(f"ALTER TABLE {quarantine} DELETE WHERE day = %(d)s AND kind = %(k)s SETTINGS mutations_sync = 2",
                       parameters={"d": day, "k": kind})
    rows = []
    for key, lines in bad.items():
        for b in lines:
            try:
                keys = key_names(json.loads(b.raw))
            except (ValueError, RecursionError):
                keys = []
            rows.append([date.fromisoformat(day), kind, key, b.line, b.reason, keys, hashlib.sha256(b.raw).hexdigest()])
    if rows:
        client.insert(quarantine, rows, column_names=["day", "kind", "file", "line", "reason", "keys", "sha256"])


def replace_day(client, table: str, day: str) -> None:
    """The day's partition of the staging table replaces silver's (or gold's) atomically; an empty
    staging drops the day. Only the file's day is touched: the load quarantined any other day's line."""
    partition = day.replace("-", "")
    staged = client.query(f"SELECT count() FROM {table}_staging").result_rows[0][0]
    if staged:
        client.command(f"ALTER TABLE {table} REPLACE PARTITION ID '{partition}' FROM {table}_staging")
    else:
        client.command(f"ALTER TABLE {table} DROP PARTITION ID '{partition}'")


# ---------------------------------------------------------------- gold

def sample_weight_sql(catalog: Catalog) -> str:
    """SQL: how many requests one stored log line stands for, 1 / the rate the sampler kept it at
    (collectors.sampling: an error at `sampling.error`; a success at the tool's, else the route's,
    else the catalog's success rate; a rate of 0 counts as 1). The catalog's rates are what the
    sampler uses unless a flag overrides them at runtime: while `spike` is on (success kept at
    least at `sampling.spike`), or `sampling_success` / `log_level=debug` raise the rate, the
    weighted counts over-estimate, and lines written unsampled (slow-operation records) count as
    sampled ones."""
    s = catalog.logs.sampling

    def weight(rate: float) -> str:
        return repr(1.0 / rate) if rate > 0 else "1.0"

    def override(column: str, rates: dict[str, float]) -> list[str]:
        if not rates or column not in catalog.logs.fields:
            return []
        keys = sorted(rates)
        return [f"{column} IN {sql_array(keys)}",
                f"transform({column}, {sql_array(keys)}, [{', '.join(weight(rates[k]) for k in keys)}], 1.0)"]

    return (f"multiIf(ok = false, {weight(s.error)}, " + ", ".join(override("tool", s.tools) + override("route", s.routes))
            + (", " if s.tools or s.routes else "") + f"{weight(s.success)})")


def gold_query(catalog: Catalog, kind: str) -> tuple[str, str]:
    """(gold table, SELECT of one day's hourly rows; the day is the parameter `d`)."""
    db = catalog.storage.clickhouse_database
    if kind == "logs":
        has_latency = "countIf(latency_ms IS NOT NULL) > 0"
        quantiles = "quantilesExactWeighted(0.5, 0.95, 0.99)(latency_ms, toUInt64(round(w * 1000)))"
        return names.GOLD_HOURLY_TABLE, (
            "SELECT hour, component, route, method, tool, err_token, count(), sum(w) AS requests, "
            "sumIf(w, ok = false) AS errors, errors / requests, "
            + ", ".join(f"if({has_latency}, toFloat64({quantiles}[{i}]), nan)" for i in (1, 2, 3)) + " FROM ("
            "SELECT toStartOfHour(ts) AS hour, component, route, method, tool, err_token, ok, latency_ms, "
            f"{sample_weight_sql(catalog)} AS w FROM {db}.{names.LOGS_TABLE} WHERE toDate(ts) = {{d:Date}}) "
            "GROUP BY hour, component, route, method, tool, err_token")
    return names.GOLD_TRAILS_HOURLY_TABLE, (
        f"SELECT toStartOfHour(ts) AS hour, kind, scope, count(), countIf(sig != '') FROM {db}.{names.TRAILS_TABLE} "
        "WHERE toDate(ts) = {d:Date} GROUP BY hour, kind, scope")


def refresh_gold(client, catalog: Catalog, kind: str, day: str) -> None:
    """The day's hourly aggregates. Logs: per component, route, method, tool and ErrorToken, the
    lines stored and, weighted by `sample_weight_sql`, the requests, errors, error rate and the
    p50/p95/p99 latency. Trails: records and signed records per kind and scope."""
    db = catalog.storage.clickhouse_database
    table, query = gold_query(catalog, kind)
    gold = f"{db}.{table}"
    client.command(f"TRUNCATE TABLE {gold}_staging")
    client.command(f"INSERT INTO {gold}_staging " + query, parameters={"d": day})
    replace_day(client, gold, day)
