"""ClickHouse DDL: silver tables for logs and trails, the quarantine, the ingest ledger, gold
hourly aggregates, and the users Grafana and the OTel Collector connect as.

Columns come from the catalog's closed field list, so a field can only reach ClickHouse if the
catalog allows it. Days are partitions: the loader replaces a whole day atomically.
Retention is the store's policy (`ttls`, `audit_days`): logs `retention.logs_days`; trails one value of
`retention.audit_days` (its `default` unless a run chooses another within min..max); the quarantine
of each kind as long as that kind; gold `retention.gold_days`. The quarantine keeps no value of a
bad line: its key names, the reason, where it was and the SHA-256 of its bytes.
Gold log rows are weighted by the sampler's rates (jobs/clickhouse_load.py `sample_weight_sql`):
`lines` is what was stored, `requests` and `errors` estimate what happened; while the `spike` flag
(or another runtime sampling override) raises the success rate, they over-estimate.
In the `cluster` profile every table is a ReplicatedMergeTree `<name>_local` ON CLUSTER with a
Distributed `<name>` in front, so queries read the same names everywhere.
"""

from __future__ import annotations

from vigia import conventions as names
from vigia.model import Catalog

LOG_TYPES = {
    "timestamp": "DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1))",
    "token": "LowCardinality(String) DEFAULT ''",
    "route": "LowCardinality(String) DEFAULT ''",
    "id": "String DEFAULT '' CODEC(ZSTD(1))",
    "bool": "Nullable(Bool)",
    "int": "Nullable(Int64) CODEC(ZSTD(1))",
}
PROVENANCE = ["`_file` LowCardinality(String) DEFAULT ''", "`_line` UInt32 DEFAULT 0"]
QUARANTINE_COLUMNS = [
    "`keys` Array(String) COMMENT 'top-level key names of the line; a name that is not an identifier or looks like a secret is (redacted)'",
    "`sha256` FixedString(64) COMMENT 'SHA-256 of the raw line: identifies it, keeps no value'",
]


def ttls(catalog: Catalog, audit: int | None = None) -> dict[str, str]:
    """Table -> TTL expression, from the retention policy."""
    r, trails = catalog.retention, catalog.retention.audit_days.policy(audit)
    return {
        names.LOGS_TABLE: f"toDateTime(ts) + INTERVAL {r.logs_days} DAY",
        names.TRAILS_TABLE: f"toDateTime(ts) + INTERVAL {trails} DAY",
        names.QUARANTINE_TABLE: f"day + toIntervalDay(if(kind = 'audit', {trails}, {r.logs_days}))",
        names.GOLD_HOURLY_TABLE: f"hour + INTERVAL {r.gold_days} DAY",
        names.GOLD_TRAILS_HOURLY_TABLE: f"hour + INTERVAL {r.gold_days} DAY",
    }


def without_ttl(clauses: str) -> str:
    """Engine clauses minus the TTL (for the loader's staging tables)."""
    return clauses.split(" TTL ")[0]


def render(catalog: Catalog, profile: str) -> dict[str, object]:
    return {names.CLICKHOUSE_DDL: ";\n\n".join(statements(catalog, profile)) + ";\n",
            names.CLICKHOUSE_USERS: users_xml(catalog)}


def log_columns(catalog: Catalog) -> list[str]:
    return [f"`{name}` {LOG_TYPES[kind]}" for name, kind in catalog.logs.fields.items()] + PROVENANCE


def trail_columns() -> list[str]:
    return [
        "`id` String",
        "`ts` DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1))",
        "`kind` LowCardinality(String)",
        "`scope` LowCardinality(String) DEFAULT ''",
        "`actor` String DEFAULT ''",
        "`refs` Array(String)",
        "`data` String CODEC(ZSTD(3))",
        "`meta` String CODEC(ZSTD(3))",
        "`sig` String DEFAULT ''",
    ] + PROVENANCE


def tables(catalog: Catalog) -> list[tuple[str, list[str], str]]:
    """(name, columns, engine clauses after the engine) for every table, in creation order."""
    ttl = ttls(catalog)
    return [
        (names.LOGS_TABLE, log_columns(catalog),
         f"PARTITION BY toYYYYMMDD(ts) ORDER BY (component, route, ts) TTL {ttl[names.LOGS_TABLE]}"),
        (names.TRAILS_TABLE, trail_columns(),
         f"PARTITION BY toYYYYMMDD(ts) ORDER BY (kind, ts, id) TTL {ttl[names.TRAILS_TABLE]}"),
        (names.QUARANTINE_TABLE, [
            "`day` Date", "`kind` LowCardinality(String)", "`file` String", "`line` UInt32", "`reason` String",
            *QUARANTINE_COLUMNS, "`at` DateTime64(3, 'UTC') DEFAULT now64(3)"],
         f"PARTITION BY toYYYYMM(day) ORDER BY (day, kind, file, line) TTL {ttl[names.QUARANTINE_TABLE]}"),
        (names.LEDGER_TABLE, [
            "`kind` LowCardinality(String)", "`day` Date", "`object_key` String", "`sha256` FixedString(64)",
            "`lines` UInt64", "`rows` UInt64", "`quarantined` UInt64", "`loaded_at` DateTime64(3, 'UTC')"],
         "ORDER BY (kind, day, object_key)"),
        (names.GOLD_HOURLY_TABLE, [
            "`hour` DateTime('UTC')", "`component` LowCardinality(String)", "`route` LowCardinality(String)",
            "`method` LowCardinality(String)", "`tool` LowCardinality(String)", "`err_token` LowCardinality(String)",
            "`lines` UInt64 COMMENT 'log lines stored (after sampling)'",
            "`requests` Float64 COMMENT 'lines weighted by 1 / sampling rate; over-estimates while the spike flag is on'",
            "`errors` Float64 COMMENT 'weighted like requests (errors are kept at sampling.error)'",
            "`error_rate` Float64 COMMENT 'errors / requests'",
            "`p50_ms` Float64", "`p95_ms` Float64", "`p99_ms` Float64"],
         f"PARTITION BY toYYYYMMDD(hour) ORDER BY (component, route, method, tool, err_token, hour) "
         f"TTL {ttl[names.GOLD_HOURLY_TABLE]}"),
        (names.GOLD_TRAILS_HOURLY_TABLE, [
            "`hour` DateTime('UTC')", "`kind` LowCardinality(String)", "`scope` LowCardinality(String)",
            "`records` UInt64", "`signed` UInt64"],
         f"PARTITION BY toYYYYMMDD(hour) ORDER BY (kind, scope, hour) TTL {ttl[names.GOLD_TRAILS_HOURLY_TABLE]}"),
    ]


# Distributed sharding keys: the rows a deduplicating engine or a day's replacement must see
# together land on the same shard (rand() would scatter a ledger entry's versions).
SHARDING_KEYS = {
    names.LOGS_TABLE: "cityHash64(correlation_id)",
    names.TRAILS_TABLE: "cityHash64(id)",
    names.QUARANTINE_TABLE: "cityHash64(file, line)",
    names.LEDGER_TABLE: "cityHash64(kind, day, object_key)",
    names.GOLD_HOURLY_TABLE: "cityHash64(component, route)",
    names.GOLD_TRAILS_HOURLY_TABLE: "cityHash64(kind, scope)",
}


def _engine(name: str, clustered: bool) -> str:
    """The table's engine; `name` is the table's name (not its `_local` one)."""
    path = "'/clickhouse/tables/{shard}/{database}/%s_local', '{replica}'" % name
    if name == names.LEDGER_TABLE:  # versions of one entry collapse to the newest load
        return f"ReplicatedReplacingMergeTree({path}, loaded_at)" if clustered else "ReplacingMergeTree(loaded_at)"
    return f"ReplicatedMergeTree({path})" if clustered else "MergeTree"


def statements(catalog: Catalog, profile: str) -> list[str]:
    db = catalog.storage.clickhouse_database
    cluster = catalog.profiles[profile].clickhouse_cluster
    on = f" ON CLUSTER {cluster}" if cluster else ""
    out = [f"CREATE DATABASE IF NOT EXISTS {db}{on}"]
    for name, columns, clauses in tables(catalog):
        local = f"{name}_local" if cluster else name
        body = ",\n    ".join(columns)
        out.append(f"CREATE TABLE IF NOT EXISTS {db}.{local}{on}\n(\n    {body}\n)\n"
                   f"ENGINE = {_engine(name, bool(cluster))}\n{clauses}")
        if cluster:
            out.append(f"CREATE TABLE IF NOT EXISTS {db}.{name}{on} AS {db}.{local}\n"
                       f"ENGINE = Distributed({cluster}, {db}, {local}, {SHARDING_KEYS[name]})")
    return out


def users_xml(catalog: Catalog) -> str:
    """Users for Grafana (read-only) and the OTel Collector; passwords from the server's environment."""
    db = catalog.storage.clickhouse_database
    return f"""<clickhouse>
    <profiles>
        <grafana_readonly>
            <readonly>2</readonly>
            <max_execution_time>30</max_execution_time>
        </grafana_readonly>
    </profiles>
    <users>
        <grafana_ro>
            <password from_env="CLICKHOUSE_GRAFANA_PASSWORD"/>
            <profile>grafana_readonly</profile>
            <networks><ip>::/0</ip></networks>
            <allow_databases><database>{db}</database></allow_databases>
        </grafana_ro>
        <otel_writer>
            <password from_env="CLICKHOUSE_OTEL_PASSWORD"/>
            <profile>default</profile>
            <networks><ip>::/0</ip></networks>
            <allow_databases><database>{db}</database></allow_databases>
        </otel_writer>
    </users>
</clickhouse>
"""
