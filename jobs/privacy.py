"""Privacy-safe hourly aggregates (seed 000): k-anonymity, then discrete Laplace noise.

Groups (component, route, hour) with fewer than k distinct ephemeral ids (`session_id`, else
`correlation_id`) are suppressed. Each id's contribution to a group is capped (CAP events,
latencies at LATENCY_CAP_MS), which bounds the sensitivity of the published figures; each figure
gets noise from the discrete Laplace distribution with scale sensitivity / (epsilon / 3), sampled
exactly with integer arithmetic (Canonne, Kamath, Steinke 2020) rather than floating-point
`numpy.random.laplace`, whose low bits leak (Mironov 2012). Every release records the budget it
spent.
"""

from __future__ import annotations

import io
import json
import secrets
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as pq

from vigia import conventions as names
from vigia.model import Catalog

CAP = 10                 # events one ephemeral id may add to one group
LATENCY_CAP_MS = 1000    # per-event latency clamp for the published sum
MEASURES = ("ids", "requests", "latency_ms_sum")


def bernoulli_exp(gamma: Fraction) -> bool:
    """True with probability exp(-gamma), exactly (CKS 2020, Algorithm 1)."""
    while gamma > 1:
        if not bernoulli_exp(Fraction(1)):
            return False
        gamma -= 1
    k = 1
    while secrets.randbelow(gamma.denominator * k) < gamma.numerator:
        k += 1
    return k % 2 == 1


def geometric(gamma: Fraction) -> int:
    """Failures before the first success, success probability 1 - exp(-gamma)."""
    count = 0
    while bernoulli_exp(gamma):
        count += 1
    return count


def discrete_laplace(scale: Fraction) -> int:
    """P(x) proportional to exp(-|x| / scale): the difference of two i.i.d. geometrics."""
    gamma = 1 / scale
    return geometric(gamma) - geometric(gamma)


def aggregates(client, catalog: Catalog, day: str) -> list[tuple]:
    db = catalog.storage.clickhouse_database
    sql = f"""
        SELECT component, route, hour, count() AS ids, sum(events) AS requests, sum(latency) AS latency_ms_sum
        FROM (
            SELECT component, route, toStartOfHour(ts) AS hour,
                   if(session_id != '', session_id, correlation_id) AS eid,
                   least(count(), {CAP}) AS events,
                   least(sum(least(ifNull(latency_ms, 0), {LATENCY_CAP_MS})), {CAP * LATENCY_CAP_MS}) AS latency
            FROM {db}.{names.LOGS_TABLE}
            WHERE toDate(ts) = %(d)s AND (session_id != '' OR correlation_id != '')
            GROUP BY component, route, hour, eid
        )
        GROUP BY component, route, hour ORDER BY component, route, hour"""
    return client.query(sql, parameters={"d": day}).result_rows


def export_release(client, catalog: Catalog, day: str) -> tuple[bytes, dict]:
    """(Parquet bytes of the noisy, k-anonymous groups, the budget record of this release)."""
    k, epsilon = catalog.privacy.k_anonymity, Fraction(str(catalog.privacy.epsilon))
    per_measure = epsilon / len(MEASURES)
    sensitivity = {"ids": 1, "requests": CAP, "latency_ms_sum": CAP * LATENCY_CAP_MS}
    rows, suppressed = [], 0
    for component, route, hour, ids, requests, latency in aggregates(client, catalog, day):
        if ids < k:
            suppressed += 1
            continue
        true = {"ids": ids, "requests": requests, "latency_ms_sum": latency}
        noisy = {m: max(0, int(true[m]) + discrete_laplace(Fraction(sensitivity[m]) / per_measure)) for m in MEASURES}
        rows.append({"component": component, "route": route, "hour": hour, **noisy})
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("component", pa.string()), ("route", pa.string()), ("hour", pa.timestamp("s", tz="UTC")),
        ("ids", pa.int64()), ("requests", pa.int64()), ("latency_ms_sum", pa.int64())]))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    release = secrets.token_hex(8)
    budget = {"release": release, "day": day, "k": k, "epsilon_total": float(epsilon),
              "epsilon_per_measure": {m: float(per_measure) for m in MEASURES},
              "sensitivity": sensitivity, "groups_published": len(rows), "groups_suppressed": suppressed,
              "mechanism": "discrete Laplace (CKS 2020), exact integer sampling"}
    return sink.getvalue(), budget


def publish(store, client, catalog: Catalog, day: str) -> dict:
    """Write the release and its budget record; the budget ledger lists every release ever made."""
    data, budget = export_release(client, catalog, day)
    folder = f"gold/private/{day.replace('-', '/')}"
    store.put(f"{folder}/release-{budget['release']}.parquet", data)
    ledger_key = "gold/private/budget.ndjson"
    ledger = store.get(ledger_key) if store.exists(ledger_key) else b""
    store.put(ledger_key, ledger + json.dumps(budget, sort_keys=True).encode() + b"\n")
    return budget
