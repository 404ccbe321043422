"""The catalog's line rules, in SQL and in Python, agree (loaded through chDB): every line the
collectors library writes passes the SQL check without being parsed in Python, and every bad line
fails it and is quarantined one by one with the Python reason, the object and line number, and
without its values."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jobs import clickhouse_load as load
from jobs import line_rules
from tests.loading import DAY, LOGS_KEY, SECRETS, log_line, obj, one
from tests.spool import write_spool


def library_objects(catalog, spool: Path) -> dict[str, list[tuple[str, load.LoadObject]]]:
    """Every spool file the collectors library wrote, as (day, object) per kind."""
    out: dict[str, list] = {"logs": [], "audit": []}
    for kind in out:
        for path in sorted((spool / kind).rglob("*.ndjson")):
            day = path.parent.relative_to(spool / kind).as_posix().replace("/", "-")
            out[kind].append((day, obj(f"{kind}/{day.replace('-', '/')}/{path.name}.zst", path.read_bytes())))
    return out


def test_every_line_the_library_writes_passes_the_fast_check_without_python_parsing(catalog, tmp_path, ch, monkeypatch):
    write_spool(catalog, tmp_path / "spool", [2, 1], per_day=60)

    def parsed(*args, **kwargs):
        raise AssertionError("a good line was parsed in Python")

    monkeypatch.setattr(load, "bad_line_reason", parsed)
    for kind, objects in library_objects(catalog, tmp_path / "spool").items():
        for day, o in objects:
            result = load.load_day(ch, catalog, kind, day, [o])
            assert (result.rows, result.quarantined, result.skipped) == (60, 0, False), (kind, day)
    assert one(ch, "SELECT count(), uniqExact(_file, _line) FROM vigia.logs") == [(120, 120)]
    assert one(ch, "SELECT count() FROM vigia.trails") == [(120,)]

BAD_LOGS = [
    (b"not json at all, alice@example.com", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"", "not JSON"),
    ({"payload": "hunter2-secret"}, "field 'payload' is not in the catalog"),
    ({"alice@example.com": 1}, "field '(redacted)' is not in the catalog"),
    ({"code": "200"}, "field 'code': type"),
    ({"latency_ms": "7"}, "field 'latency_ms': type"),
    ({"code": 1.0}, "field 'code': type"),
    ({"code": 2 ** 70}, "field 'code': out of range"),
    ({"ok": 1}, "field 'ok': type"),
    ({"tenant": None}, "field 'tenant': type"),
    ({"component": "billing"}, "field 'component': not in the catalog's closed set"),
    ({"tenant": "x" * 3000}, "field 'tenant': too_long"),
    ({"tenant": "alice@example.com"}, "field 'tenant': pattern"),
    ({"node": "sk_live_abcdefghijklmnop"}, "field 'node': api_key"),
    ({"session_id": "sk_live_abcdefghijklmnop"}, "field 'session_id': api_key"),
    ({"node": "eyJhbGciOiJIUzI1.eyJzdWIiOiIx"}, "field 'node': jwt"),
    ({"route": "/v1/eval"}, "field 'route': not a route of the component"),
    ({"method": "PATCH"}, "field 'method': not in the catalog's closed set"),
    ({"err_token": "OOPS"}, "field 'err_token': not in the catalog's closed set"),
    ({"ts": ...}, "field 'ts' is missing"),
    ({"component": ...}, "field 'component' is missing"),
    ({"ts": 1795219200}, "field 'ts': type"),
    ({"ts": "garbage"}, "field 'ts': pattern"),
    ({"ts": f"{DAY}T24:00:00.000Z"}, "field 'ts': not a valid time"),
    ({"ts": "2026-11-22T00:00:01.000Z"}, line_rules.OUTSIDE_DAY),
]


def test_each_bad_log_line_is_quarantined_with_its_reason_and_no_value(catalog, ch):
    good = [log_line(catalog, i) for i in range(5)]
    bad = [line if isinstance(line, bytes) else log_line(catalog, 99, **line) for line, _ in BAD_LOGS]
    bad.append(good[0][:-1] + b',"tenant":"acme"}')  # a key twice
    data = b"\n".join(good + bad) + b"\n"
    result = load.load_day(ch, catalog, "logs", DAY, [obj(LOGS_KEY, data)])
    assert (result.rows, result.quarantined) == (5, len(bad))
    rows = one(ch, "SELECT file, line, reason, keys, toString(sha256) FROM vigia.quarantine ORDER BY line")
    assert [(r[0], r[1]) for r in rows] == [(LOGS_KEY, 6 + i) for i in range(len(bad))]
    assert [r[2] for r in rows] == [reason for _, reason in BAD_LOGS] + ["key 'tenant' appears twice"]
    assert [r[4] for r in rows] == [hashlib.sha256(line).hexdigest() for line in bad]
    assert rows[3][3][-1] == "payload" and rows[4][3][-1] == "(redacted)" and rows[0][3] == []
    stored = json.dumps(one(ch, "SELECT * FROM vigia.quarantine"), default=str).encode()
    assert not any(secret in stored for secret in SECRETS)
    assert one(ch, "SELECT min(_line), max(_line), count() FROM vigia.logs") == [(1, 5, 5)]

def trail(catalog, tmp_path) -> list[bytes]:
    write_spool(catalog, tmp_path / "spool", [1], per_day=3)
    [path] = list((tmp_path / "spool" / "audit").rglob("*.ndjson"))
    return path.read_bytes().splitlines()


def test_each_bad_trail_line_is_quarantined_with_its_reason(catalog, tmp_path, ch):
    good = trail(catalog, tmp_path)
    day = json.loads(good[0])["ts"][:10]
    record = json.loads(good[0])

    def changed(**fields):
        return json.dumps({**record, **fields}, separators=(",", ":")).encode()

    data_of = record["data"]
    bad = [
        (changed(ts="garbage"), "field 'ts': pattern"),
        (changed(ts=f"{day}T25:00:00.000Z"), "field 'ts': not a valid time"),
        (changed(kind="office.chat"), "field 'kind': not a trail kind of the catalog"),
        (changed(actor="alice@example.com"), "office.tool_call: actor must be an id (pattern)"),
        (changed(refs=["ok", "sk_live_abcdefghijklmnop"]), "office.tool_call: refs[] must be an id (api_key)"),
        (changed(data={**data_of, "note": "hunter2-secret"}), "office.tool_call: data has fields the catalog does not declare; "
                                                              "it takes args_min, cost, tool"),
        (changed(data={**data_of, "args_min": {"password": 1}}), "office.tool_call: data.args_min has a key that is a forbidden name"),
        (changed(data={**data_of, "args_min": {"v": "eyJhbGciOiJIUzI1.eyJzdWIiOiIx"}}),
         "office.tool_call: data.args_min.v must be an id, a type name or a counter (jwt)"),
        (changed(data={**data_of, "cost": "1"}), "office.tool_call: data.cost must be an integer (type)"),
        (changed(sig="not-hex"), "field 'sig': not an Ed25519 signature in hex"),
        (json.dumps(dict(reversed(list(record.items()))), separators=(",", ":")).encode(),
         "trail keys are not id, ts, kind, scope, actor, refs, data, meta, sig"),
    ]
    data = b"\n".join(good + [line for line, _ in bad]) + b"\n"
    result = load.load_day(ch, catalog, "audit", day, [obj("audit/x/office-n1-0000.ndjson.zst", data)])
    assert (result.rows, result.quarantined) == (3, len(bad))
    assert one(ch, "SELECT line, reason FROM vigia.quarantine ORDER BY line") == [(4 + i, r) for i, (_, r) in enumerate(bad)]
    stored = json.dumps(one(ch, "SELECT * FROM vigia.quarantine"), default=str).encode()
    assert not any(secret in stored for secret in SECRETS)
    assert one(ch, "SELECT kind, data FROM vigia.trails WHERE _line = 1") == [(record["kind"], json.dumps(
        data_of, separators=(",", ":")))]
