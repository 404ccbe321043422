"""The ClickHouse loader against chDB: the ledger skips what is loaded, a line of another day never
touches that day, a line off the wire format still loads and one ClickHouse refuses is quarantined
alone, the lines keep their file order, gold is weighted by the sampling rates, and the TTLs are the
store's retention policy. (The line rules themselves: tests/test_line_rules.py.)"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from jobs import clickhouse_load as load
from jobs import lifecycle, line_rules, rollup
from jobs import manifest as mf
from jobs.store import LocalStore
from tests.loading import DAY, LOGS_KEY, client_at, log_line, obj, one
from tests.spool import write_spool


def test_the_ledger_skips_what_is_loaded_and_a_rerun_reports_it(catalog, tmp_path, ch):
    data = b"".join(log_line(catalog, i) + b"\n" for i in range(10))
    first = load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, data)])
    assert (first.rows, first.skipped) == (10, False)
    assert load.loaded_objects(ch, catalog, "logs", DAY) == {(LOGS_KEY, hashlib.sha256(data).hexdigest())}
    again = load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, data)])
    assert again.skipped and again.rows == 0
    assert one(ch, "SELECT count() FROM vigia.ingest_ledger") == [(1,)], "nothing was loaded again"
    changed = data + log_line(catalog, 11) + b"\n"  # the same key with other content is loaded again
    assert not load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, changed)]).skipped
    assert one(ch, "SELECT count() FROM vigia.logs") == [(11,)]


def test_a_rollup_rerun_loads_nothing_again(catalog, tmp_path):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=20)
    store, client = LocalStore(tmp_path / "store"), client_at(tmp_path / "ch")
    key = mf.load_or_create_key(tmp_path / "key")
    rollup.run(catalog, tmp_path / "spool", store, client, key)
    ledger = one(client, "SELECT kind, day, object_key, toString(sha256), loaded_at FROM vigia.ingest_ledger ORDER BY ALL")
    assert len(ledger) == 4
    rollup.run(catalog, tmp_path / "spool", store, client, key)
    assert one(client, "SELECT kind, day, object_key, toString(sha256), loaded_at FROM vigia.ingest_ledger ORDER BY ALL") == ledger
    for kind, day, object_key, sha, _ in ledger:  # and the ledger says so for every object
        assert (object_key, sha) in load.loaded_objects(client, catalog, kind, day.isoformat())


def test_a_crash_before_the_ledger_write_redoes_the_day_idempotently(catalog, ch):
    data = b"".join(log_line(catalog, i) + b"\n" for i in range(10)) + b'{"ts":"x"}\n'
    objects = [obj(LOGS_KEY, data)]
    first = load.load_day(ch, catalog, "logs", DAY, objects, write_ledger=False)  # then the process dies
    assert (first.rows, first.quarantined, first.per_object) == (10, 1, {LOGS_KEY: 1})
    second = load.load_day(ch, catalog, "logs", DAY, objects, write_ledger=False)
    assert not second.skipped and second.rows == 10
    load.record_loaded(ch, catalog, "logs", DAY, objects, second)
    assert load.load_day(ch, catalog, "logs", DAY, objects).skipped
    assert one(ch, "SELECT count() FROM vigia.logs") == [(10,)]
    assert one(ch, "SELECT count() FROM vigia.quarantine") == [(1,)]
    assert one(ch, "SELECT sum(lines) FROM vigia.logs_hourly") == [(10,)]


def test_a_line_of_another_day_is_quarantined_and_that_day_is_untouched(catalog, ch):
    next_day = "2026-11-22"
    theirs = b"".join(log_line(catalog, i, ts=f"{next_day}T01:00:{i:02d}.000Z") + b"\n" for i in range(3))
    load.load_day(ch, catalog, "logs", next_day, [obj("logs/2026/11/22/gateway-n1-0000.ndjson.zst", theirs)])
    ours = b"".join(log_line(catalog, i) + b"\n" for i in range(4)) + log_line(catalog, 9, ts=f"{next_day}T05:00:00.000Z") + b"\n"
    result = load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, ours)])
    assert (result.rows, result.quarantined) == (4, 1)
    assert one(ch, "SELECT toDate(ts), count() FROM vigia.logs GROUP BY 1 ORDER BY 1") == [
        (datetime.fromisoformat(DAY).date(), 4), (datetime.fromisoformat(next_day).date(), 3)]
    assert one(ch, "SELECT line, reason FROM vigia.quarantine") == [(5, line_rules.OUTSIDE_DAY)]


def test_valid_json_off_the_wire_format_loads_and_a_line_clickhouse_rejects_is_quarantined(catalog, ch, monkeypatch):
    spaced = json.dumps(json.loads(log_line(catalog, 1))).encode()  # spaces: valid, not how the logger writes
    escaped = log_line(catalog, 2).replace(b'"node":"n1"', b'"node":"n\\u0031"')
    long_int = log_line(catalog, 3, bytes_out=1234567890123456789)  # 19 digits: past the fast check's 18
    data = b"\n".join([log_line(catalog, 0), spaced, escaped, long_int]) + b"\n"
    assert load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, data)]).rows == 4
    assert one(ch, "SELECT _line, node, bytes_out FROM vigia.logs ORDER BY _line") == [
        (1, "n1", None), (2, "n1", None), (3, "n1", None), (4, "n1", 1234567890123456789)]
    # a line the reference check would pass but ClickHouse refuses: quarantined alone, the run goes on
    monkeypatch.setattr(load, "bad_line_reason", lambda *args, **kwargs: None)
    refused = data + b'{"ts":"' + DAY.encode() + b'T10:00:00.000Z","component":"gateway","node":"n1","code":"x"}\n'
    result = load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, refused)])
    assert (result.rows, result.quarantined) == (4, 1)
    [(line, reason)] = one(ch, "SELECT line, reason FROM vigia.quarantine")
    assert line == 5 and reason.startswith("ClickHouse rejected the line (code ")


def test_carriage_returns_count_lines_as_the_manifest_does(catalog, ch):
    data = log_line(catalog, 0) + b"\r\n" + log_line(catalog, 1) + b"\rtail\n" + log_line(catalog, 2)  # no final newline
    result = load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, data)])
    assert (result.rows, result.quarantined) == (3, 1)  # splitlines: 4 lines, "tail" the third
    assert one(ch, "SELECT line, reason FROM vigia.quarantine") == [(3, "not JSON")]
    assert one(ch, "SELECT groupArray(_line) FROM (SELECT _line FROM vigia.logs ORDER BY _line)") == [([1, 2, 4],)]


def test_a_manifest_that_does_not_match_the_object_names_the_object(catalog, ch):
    data = log_line(catalog) + b"\n"
    with pytest.raises(load.LoadError, match=LOGS_KEY):
        load.load_day(ch, catalog, "logs", DAY, [load.LoadObject(LOGS_KEY, "0" * 64, 2, data)])
    assert one(ch, "SELECT count() FROM vigia.logs") == [(0,)]


def test_gold_weights_each_line_by_its_sampling_rate(catalog, ch):
    sampling = catalog.logs.sampling
    webhook = next(iter(sampling.routes))
    lines = [log_line(catalog, i, latency_ms=10) for i in range(3)]  # successes at the catalog rate
    lines += [log_line(catalog, 10 + i, route=webhook, method="POST", latency_ms=20) for i in range(2)]
    lines += [log_line(catalog, 20 + i, ok=False, code=500, err_token="INTERNAL", latency_ms=30) for i in range(2)]
    load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, b"\n".join(lines) + b"\n")])
    gold = {(r[0], r[1]): r[2:] for r in one(
        ch, "SELECT route, err_token, lines, requests, errors, error_rate, p50_ms FROM vigia.logs_hourly")}
    assert gold[("/v1/items", "")] == pytest.approx((3, 3 / sampling.success, 0, 0, 10))
    assert gold[(webhook, "")] == pytest.approx((2, 2 / sampling.routes[webhook], 0, 0, 20))
    assert gold[("/v1/items", "INTERNAL")] == pytest.approx((2, 2 / sampling.error, 2 / sampling.error, 1, 30))
    # the day's error rate: 2 errors out of every request the sampled lines stand for
    [(rate, p50)] = one(ch, "SELECT sum(errors) / sum(requests), quantileExactWeighted(0.5)(p50_ms, toUInt64(requests)) "
                            "FROM vigia.logs_hourly")
    assert rate == pytest.approx(2 / (3 / sampling.success + 2 / sampling.routes[webhook] + 2 / sampling.error))
    assert p50 == 10


def ttl_of(client, table: str) -> str:
    return one(client, "SELECT engine_full FROM system.tables WHERE database = 'vigia' AND name = %(t)s", t=table)[0][0]


def test_clickhouse_ttls_are_the_stores_retention_policy(catalog, ch):
    policy = lifecycle.retention_days(catalog)
    assert policy["audit"] == catalog.retention.audit_days.policy() == catalog.retention.audit_days.default
    load.ensure_schema(ch, catalog)
    assert f"toIntervalDay({policy['logs']})" in ttl_of(ch, "logs")
    assert f"toIntervalDay({policy['audit']})" in ttl_of(ch, "trails")
    assert f"if(kind = 'audit', {policy['quarantine/audit']}, {policy['quarantine/logs']})" in ttl_of(ch, "quarantine")
    chosen = catalog.retention.audit_days.max  # a run's --audit-days moves the trails and their quarantine with it
    load.ensure_schema(ch, catalog, audit_days=chosen)
    assert f"toIntervalDay({chosen})" in ttl_of(ch, "trails")
    assert f"if(kind = 'audit', {chosen}, " in ttl_of(ch, "quarantine")
    assert "TTL" not in ttl_of(ch, "logs_staging")  # a backfilled old day is not dropped on its way in
    with pytest.raises(ValueError, match="audit retention"):
        catalog.retention.audit_days.policy(catalog.retention.audit_days.max + 1)


def test_an_old_quarantine_loses_its_raw_lines(catalog, ch):
    ch.command("CREATE DATABASE IF NOT EXISTS vigia")
    ch.command("CREATE TABLE vigia.quarantine (`day` Date, `kind` LowCardinality(String), `file` String, `line` UInt32, "
               "`raw` String, `reason` String, `at` DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree "
               "PARTITION BY toYYYYMM(day) ORDER BY (day, kind, file, line)")
    ch.command(f"INSERT INTO vigia.quarantine (day, kind, file, line, raw, reason) VALUES ('{DAY}', 'logs', 'k', 1, "
               "'{\"payload\":\"hunter2-secret\"}', 'field payload')")
    load.ensure_schema(ch, catalog)
    columns = [r[0] for r in one(ch, "SELECT name FROM system.columns WHERE database = 'vigia' AND table = 'quarantine'")]
    assert "raw" not in columns and {"keys", "sha256"} <= set(columns)
    assert b"hunter2" not in json.dumps(one(ch, "SELECT * FROM vigia.quarantine"), default=str).encode()


def test_a_gold_table_of_an_earlier_shape_is_rebuilt_from_silver(catalog, ch):
    load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, b"".join(log_line(catalog, i) + b"\n" for i in range(4)))])
    ch.command("DROP TABLE vigia.logs_staging")
    ch.command("DROP TABLE vigia.logs_hourly")
    ch.command("DROP TABLE vigia.logs_hourly_staging")
    ch.command("CREATE TABLE vigia.logs_hourly (`hour` DateTime('UTC'), `component` LowCardinality(String), "
               "`route` LowCardinality(String), `requests` UInt64, `errors` UInt64, `p50_ms` Float64, `p95_ms` Float64, "
               "`p99_ms` Float64) ENGINE = MergeTree PARTITION BY toYYYYMMDD(hour) ORDER BY (component, route, hour)")
    ch.command("CREATE TABLE vigia.logs_hourly_staging AS vigia.logs_hourly")
    ch.command("CREATE TABLE vigia.logs_staging AS vigia.logs")  # as the previous loader made it: with the TTL
    load.ensure_schema(ch, catalog)
    assert "TTL" not in ttl_of(ch, "logs_staging")
    assert one(ch, "SELECT sum(lines), sum(requests) FROM vigia.logs_hourly") == [
        (4, pytest.approx(4 / catalog.logs.sampling.success))]
    assert "TTL" not in ttl_of(ch, "logs_hourly_staging")


def test_the_lines_keep_their_file_order_across_blocks(catalog, ch):
    count = 150_000  # several ClickHouse blocks
    start = datetime.fromisoformat(DAY).replace(tzinfo=timezone.utc)
    data = "".join('{"ts":"%s","component":"core","node":"n1","correlation_id":"c%d"}\n' % (
        (start + timedelta(milliseconds=500 * i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", i) for i in range(count)).encode()
    assert load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, data)]).rows == count
    assert one(ch, "SELECT countIf(correlation_id != concat('c', toString(_line - 1))) FROM vigia.logs") == [(0,)]


def test_the_bench_measures_the_load_path_against_the_python_baseline(catalog):
    from jobs.bench import bench_rollup, objects_of, synthetic_lines
    data = synthetic_lines(catalog, 400)
    assert all(line_rules.bad_line_reason(catalog, "logs", line, "2026-11-21") is None for line in data.splitlines())
    assert sum(o.lines for o in objects_of(catalog, data)) == 400
    result = bench_rollup(catalog, megabytes=1, rows=2000, progress=lambda _: None, repeat=1)
    assert result["rows"] == 2000 and result["load_rows_s"] > 0 and result["load_python_rows_s"] > 0
    assert {"ship_ratio", "load_ratio", "load_ratio_vs_checked", "goal_load_rows_s_min"} <= set(result)
