"""The catalog's rules for one NDJSON line, written twice: in Python and as ClickHouse SQL.

Both exist because the loader (jobs/clickhouse_load.py) checks every line in ClickHouse, so that
no good line is parsed in Python, and still has to say why a bad line was refused. They are one
definition in two languages, kept in one module so a change to one is made next to the other;
tests/test_line_rules.py checks they agree: every line the collectors library writes passes the
SQL, and every bad line fails it and gets its reason from the Python.

The SQL (`catalog_sql`, rendered once per catalog, `CatalogSql`): a single RE2 match of the whole
line against the wire format (compact JSON; the closed field list; each field's type, pattern and
length; for trails the canonical key order, the kind's exact `data` fields and `meta`), then on the
extracted values the closed sets (component, route of that component, tenant, method, tool,
ErrorToken), the leak patterns of `collectors.logger.LEAKS`, required fields, no repeated key, and
a real timestamp *within the file's UTC day*.

The Python (`bad_line_reason`: `json.loads` + `collectors.logger.check_value`,
`collectors.trails.Rules`) is the reference and names the reason. It accepts a superset of the
SQL: a line off the wire format (JSON with spaces, or escaped characters the writers do not use)
can still be valid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from collectors.logger import LEAKS, PATTERNS, check_value
from collectors.trails import ARG_KEY, ARG_VALUE_MAX, ORDER as TRAIL_KEYS, Rules, TrailError
from vigia import conventions as names
from vigia.model import Catalog

REQUIRED_LOG_FIELDS = ("ts", "component", "node")  # the logger writes these on every line
META_KEYS = ("hash", "key_id", "prev", "seq", "tenant")
HEX = {"hash": re.compile(r"[0-9a-f]{64}"), "key_id": re.compile(r"[0-9a-f]{16}"), "prev": re.compile(r"(?:[0-9a-f]{64})?"),
       "sig": re.compile(r"(?:[0-9a-f]{128})?")}
INT64 = (-(1 << 63), (1 << 63) - 1)
KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
OUTSIDE_DAY = "ts outside the file's day"


# ---------------------------------------------------------------- the catalog's rules, in Python

def key_names(record: object) -> list[str]:
    """A record's top-level key names, each replaced when it is not an identifier or looks like a secret."""
    if not isinstance(record, dict):
        return []
    return [safe_key(k) for k in record]


def safe_key(key: str) -> str:
    return key if KEY_NAME.fullmatch(key) and not any(p.search(key) for p in LEAKS.values()) else "(redacted)"


def closed_sets(catalog: Catalog) -> dict[str, frozenset[str]]:
    """Log fields whose values the catalog enumerates (route is checked per component)."""
    sets = {"component": frozenset(c.name for c in catalog.components),
            "tenant": frozenset(catalog.tenants + (names.OTHER_TENANT,)),
            "err_token": frozenset(catalog.error_tokens)}
    for field_name in ("method", "tool"):
        if field_name in catalog.label_sets:
            sets[field_name] = frozenset(catalog.label_sets[field_name])
    return {k: v for k, v in sets.items() if k in catalog.logs.fields}


def component_routes(catalog: Catalog) -> dict[str, frozenset[str]]:
    extra = names.DEBUG_ROUTES + (names.UNMATCHED_ROUTE,)
    return {c.name: frozenset(c.route_templates + extra) for c in catalog.components}


def _ts_reason(value: str, day: str | None) -> str | None:
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return "field 'ts': not a valid time"
    if day is not None and value[:10] != day:
        return OUTSIDE_DAY
    return None


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return record


def bad_line_reason(catalog: Catalog, kind: str, line: bytes, day: str | None = None) -> str | None:
    """Why one NDJSON line may not be loaded, or None: the reference check (the fast SQL check
    accepts a subset of what this accepts). `day` (YYYY-MM-DD) is the file's UTC day."""
    try:
        record = json.loads(line, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        return f"key {safe_key(str(dup))!r} appears twice"
    except (ValueError, RecursionError):
        return "not JSON"
    return record_reason(catalog, kind, record, day)


def record_reason(catalog: Catalog, kind: str, record: object, day: str | None = None) -> str | None:
    """`bad_line_reason` for a line already parsed (without duplicate keys)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if kind == "audit":
        return _trail_reason(catalog, record, day)
    fields, max_len = catalog.logs.fields, catalog.logs.max_value_length
    sets, routes = closed_sets(catalog), component_routes(catalog)
    for key, value in record.items():
        if key not in fields:
            return f"field {safe_key(key)!r} is not in the catalog"
        reason = check_value(fields[key], value, max_len)
        if reason:
            return f"field {key!r}: {reason}"
        if fields[key] == "int" and not INT64[0] <= value <= INT64[1]:
            return f"field {key!r}: out of range"  # the column is Int64
    for key in REQUIRED_LOG_FIELDS:
        if key in fields and key not in record:
            return f"field {key!r} is missing"
    for key, allowed in sets.items():
        if key in record and record[key] not in allowed:
            return f"field {key!r}: not in the catalog's closed set"
    if "route" in record and "component" in record and record["route"] not in routes[record["component"]]:
        return "field 'route': not a route of the component"
    return _ts_reason(record["ts"], day)


def _trail_reason(catalog: Catalog, record: dict, day: str | None) -> str | None:
    if tuple(record) != TRAIL_KEYS:
        return "trail keys are not " + ", ".join(TRAIL_KEYS)
    kind = record["kind"]
    if not isinstance(kind, str) or kind not in catalog.trails.kinds:
        return "field 'kind': not a trail kind of the catalog"
    max_len = catalog.logs.max_value_length
    for key, ftype in (("id", "id"), ("ts", "timestamp")):
        reason = check_value(ftype, record[key], max_len)
        if reason:
            return f"field {key!r}: {reason}"
    rules = _rules(catalog)
    try:
        rules.value(kind, "scope", "id", record["scope"])
        rules.value(kind, "actor", "id", record["actor"])
        rules.refs(kind, record["refs"])
        rules.data(kind, record["data"])
    except TrailError as error:
        return str(error)
    meta = record["meta"]
    if not isinstance(meta, dict) or not set(meta) <= set(META_KEYS) or not {"hash", "prev", "seq"} <= set(meta):
        return "field 'meta': keys are not hash, [key_id,] prev, seq[, tenant]"
    for key in ("hash", "key_id", "prev"):
        if key in meta and not (isinstance(meta[key], str) and HEX[key].fullmatch(meta[key])):
            return f"field 'meta.{key}': not a hex digest"
    if not (meta["seq"].__class__ is int and meta["seq"] >= 1):
        return "field 'meta.seq': not a positive integer"
    if "tenant" in meta:
        try:
            rules.value(kind, "meta.tenant", "id", meta["tenant"])
        except TrailError as error:
            return str(error)
    if not (isinstance(record["sig"], str) and HEX["sig"].fullmatch(record["sig"])):
        return "field 'sig': not an Ed25519 signature in hex"
    return _ts_reason(record["ts"], day)


def _per_catalog(build):
    """Memoise `build(catalog, *args)` per catalog object (the model holds dicts: it is not hashable)."""
    cache: dict = {}

    def get(catalog: Catalog, *args):
        hit = cache.get((id(catalog), *args))
        if hit is None or hit[0] is not catalog:
            if len(cache) > 16:
                cache.clear()
            hit = cache[(id(catalog), *args)] = (catalog, build(catalog, *args))
        return hit[1]
    return get


_rules = _per_catalog(Rules)


# ---------------------------------------------------------------- the same rules, as SQL

def sql_string(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_array(values) -> str:
    """A ClickHouse array of string literals, sorted so a set renders the same SQL every time."""
    return "[" + ", ".join(sql_string(v) for v in sorted(values)) + "]"


def _no_leak(kind: str, value: str) -> str:
    """SQL: the value carries none of check_value's leak shapes (for an id only the key shape)."""
    if kind == "id":
        return f"((position({value}, '_') = 0 AND position({value}, '-') = 0) OR NOT match({value}, {sql_string(LEAKS['api_key'].pattern)}))"
    return "(" + " AND ".join(f"NOT match({value}, {sql_string(p.pattern)})" for p in LEAKS.values()) + ")"


def _string_ok(kind: str, value: str, max_len: int) -> str:
    """SQL for check_value on a string the wire-format regex already matched against the pattern."""
    return f"(lengthUTF8({value}) <= {max_len} AND {_no_leak(kind, value)})"


def _value_re(kind: str) -> str:
    """The JSON text of one value of a catalog type, as the writers emit it."""
    if kind == "int":
        return r"-?(?:0|[1-9][0-9]{0,17})"  # up to 18 digits: always an Int64 (longer ones take the slow path)
    if kind == "bool":
        return "(?:true|false)"
    pattern = PATTERNS[kind].pattern
    if re.search(pattern, '"') or re.search(pattern, "\\"):
        raise ValueError(f"the {kind} pattern can match a quote or a backslash: it cannot be checked on the wire format")
    return f'"(?:{pattern})"'


TIME_OF_DAY = r"^.{10}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\."


def _ts_ok(ts: str, day_param: str) -> str:
    """SQL: a TS-shaped value is a real time of the file's day (a valid date, as the day is)."""
    return f"(startsWith({ts}, {day_param}) AND match({ts}, {sql_string(TIME_OF_DAY)}))"


@dataclass(frozen=True)
class CatalogSql:
    """The catalog's line rules for one kind as SQL over a column `line` and `v`, the line's
    parsed values (`extract`): `ok`, the predicate (the file's day is the query parameter `day`),
    and `select`, the silver columns of a line that passed."""

    extract: str
    ok: str
    columns: tuple[str, ...]
    select: tuple[str, ...]


def _catalog_sql(catalog: Catalog, kind: str) -> CatalogSql:
    return _log_sql(catalog) if kind == "logs" else _trail_sql(catalog)


catalog_sql = _per_catalog(_catalog_sql)


def _log_sql(catalog: Catalog) -> CatalogSql:
    """Once the line matched the wire format (flat, compact, no value holding a quote, a backslash
    or nothing), `simpleJSON*` reads each value exactly, and `"name":` occurs only as a key."""
    fields, max_len = catalog.logs.fields, catalog.logs.max_value_length
    one = "|".join(f'"{re.escape(name)}":{_value_re(kind)}' for name, kind in fields.items())
    shape = f"^\\{{(?:{one})(?:,(?:{one}))*\\}}$"
    sets, routes = closed_sets(catalog), component_routes(catalog)
    for key, allowed in [*sets.items(), ("route", frozenset().union(*routes.values()))]:
        bad = sorted(v for v in allowed if check_value(fields[key], v, max_len))  # members skip the value rules
        if bad:
            raise ValueError(f"catalog: {key} values {bad} break the log rules")
    present = {name: f"(position(line, {sql_string(chr(34) + name + chr(34) + ':')}) > 0)" for name in fields}
    value = {}  # strings: '' when absent (the wire format has no empty string); numbers: NULL when absent
    for name, kind in fields.items():
        if kind in ("timestamp", "token", "route", "id"):
            value[name] = f"simpleJSONExtractString(line, {sql_string(name)})"
        elif kind == "int":
            value[name] = f"if({present[name]}, simpleJSONExtractInt(line, {sql_string(name)}), NULL)"
        else:
            value[name] = f"if({present[name]}, simpleJSONExtractBool(line, {sql_string(name)}) = 1, NULL)"
    checks = [f"match(line, {sql_string(shape)})",
              "countSubstrings(line, '\":') = " + " + ".join(present.values())]  # no key twice
    checks += [f"{value[name]} != ''" for name in REQUIRED_LOG_FIELDS if name in fields]
    for name, kind in fields.items():
        v = value[name]
        if name in sets:
            checks.append(f"({v} = '' OR {v} IN {sql_array(sets[name])})")
        elif name == "route" and "component" in fields:
            pairs = ", ".join(f"({sql_string(c)}, {sql_string(r)})" for c in sorted(routes) for r in sorted(routes[c]))
            checks.append(f"({v} = '' OR ({value['component']}, {v}) IN ({pairs}))")
        elif kind == "timestamp":
            checks.append(f"({v} = '' OR {_ts_ok(v, '{day:String}')})")
        elif kind in ("token", "route", "id"):
            checks.append(_string_ok(kind, v, max_len))
    select = [f"parseDateTime64BestEffortOrZero({value[n]}, 3, 'UTC')" if k == "timestamp" else value[n]
              for n, k in fields.items()]
    return CatalogSql("", "(" + " AND ".join(checks) + ")", tuple(fields), tuple(select))


def _trail_sql(catalog: Catalog) -> CatalogSql:
    max_len = catalog.logs.max_value_length
    string = {k: _value_re(k) for k in ("id", "timestamp", "token", "route")}
    refs = f'\\[(?:{string["id"]}(?:,{string["id"]})*)?\\]'
    arg_item = f'"{ARG_KEY.pattern}":(?:{_value_re("int").replace("-?", "")}|"(?:{PATTERNS["token"].pattern})")'
    args = f"\\{{(?:{arg_item}(?:,{arg_item})*)?\\}}"
    kinds = []
    for kind, spec in sorted(catalog.trails.kinds.items()):
        data = ",".join(f'"{re.escape(f)}":' + (args if t == "args_min" else _value_re(t)) for f, t in sorted(spec.items()))
        kinds.append(f'"kind":"{re.escape(kind)}","scope":{string["id"]},"actor":{string["id"]},"refs":{refs},'
                     f'"data":\\{{{data}\\}}')
    meta = (f'\\{{"hash":"{HEX["hash"].pattern}"(?:,"key_id":"{HEX["key_id"].pattern}")?,"prev":"{HEX["prev"].pattern}",'
            f'"seq":[1-9][0-9]{{0,17}}(?:,"tenant":{string["id"]})?\\}}')
    shape = (f'^\\{{"id":{string["id"]},"ts":{string["timestamp"]},(?:{"|".join(kinds)}),"meta":{meta},'
             f'"sig":"{HEX["sig"].pattern}"\\}}$')
    extract = "JSONExtractKeysAndValuesRaw(line)"
    unquote = "substring(v[{i}].2, 2, length(v[{i}].2) - 2)"
    col = {name: unquote.format(i=i + 1) for i, name in enumerate(TRAIL_KEYS)}
    raw = {name: f"v[{i + 1}].2" for i, name in enumerate(TRAIL_KEYS)}
    refs_array = f"JSONExtract({raw['refs']}, 'Array(String)')"
    tenant = f"JSONExtractString({raw['meta']}, 'tenant')"
    forbidden = sql_array(catalog.logs.forbidden)
    arg_key_ok = f"(NOT has({forbidden}, a.1) AND {_no_leak('id', 'a.1')})"
    arg_value_ok = f"(NOT startsWith(a.2, '\"') OR {_string_ok('token', 'substring(a.2, 2, length(a.2) - 2)', ARG_VALUE_MAX)})"
    per_kind = []
    for kind, spec in sorted(catalog.trails.kinds.items()):
        parts = ["1"]
        for name, ftype in sorted(spec.items()):
            if ftype == "args_min":
                parts.append(f"arrayAll(a -> {arg_key_ok} AND {arg_value_ok}, "
                             f"JSONExtractKeysAndValuesRaw({raw['data']}, {sql_string(name)}))")
            elif ftype in ("token", "route", "id"):
                parts.append(_string_ok(ftype, f"JSONExtractString({raw['data']}, {sql_string(name)})", max_len))
        per_kind += [f"{col['kind']} = {sql_string(kind)}", " AND ".join(parts)]
    checks = [f"match(line, {sql_string(shape)})",
              _ts_ok(col["ts"], "{day:String}"),
              *(_string_ok("id", col[name], max_len) for name in ("id", "scope", "actor")),
              f"arrayAll(r -> {_string_ok('id', 'r', max_len)}, {refs_array})",
              f"{_string_ok('id', tenant, max_len)}",
              f"multiIf({', '.join(per_kind)}, 0)"]
    columns = list(TRAIL_KEYS)
    select = [col["id"], f"parseDateTime64BestEffortOrZero({col['ts']}, 3, 'UTC')", col["kind"], col["scope"],
              col["actor"], refs_array, raw["data"], raw["meta"], col["sig"]]
    return CatalogSql(extract, "(" + " AND ".join(checks) + ")", tuple(columns), tuple(select))
