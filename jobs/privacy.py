"""Privacy-safe hourly aggregates (seed 000): k-anonymity, then discrete Laplace noise, on a budget.

Privacy unit. The unit is the ephemeral `session_id`. k-anonymity counts distinct session ids per
group (component, route, hour); groups with fewer than k are suppressed. Lines without a session id
are left out of the release entirely: they count neither as people nor as requests, because their
only other id (`correlation_id`) is unique per request, so counting it would let one user making
five requests pass k=5, and nothing would bound what one unidentified user adds to a group.

Noise. Each session's contribution to a group is capped (CAP events, latencies clamped at
LATENCY_CAP_MS), which bounds the sensitivity of each figure; each figure gets discrete Laplace
noise of scale sensitivity / (epsilon / 3), sampled exactly from integer randomness (Canonne,
Kamath, Steinke 2020) rather than floating-point `numpy.random.laplace`, whose low bits leak
(Mironov 2012).

Budget. Every release of a day spends the catalog's `privacy.epsilon`, and the ledger
(`gold/private/budget.ndjson`) records it. A day's releases may spend at most a total budget
(default: one release's epsilon), since averaging several noisy releases of the same data cancels
the noise. Asking again for the same day and query re-serves the stored release: the same noisy
numbers published twice reveal nothing new, so that costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as pq

from vigia import conventions as names
from vigia.model import Catalog

CAP = 10                 # events one session may add to one group
LATENCY_CAP_MS = 1000    # per-event latency clamp for the published sum
MEASURES = ("ids", "requests", "latency_ms_sum")
MECHANISM = "discrete Laplace (CKS 2020, Algorithm 2), exact integer sampling"
LEDGER = "gold/private/budget.ndjson"


class BudgetExceeded(RuntimeError):
    """A new release would spend more than the day's privacy budget."""


# ---------------------------------------------------------------- exact sampling
# `rng` is anything with randbelow(n) (the `secrets` module by default: OS randomness, integers
# only); tests pass a counting wrapper to check the expected number of draws.

def bernoulli_exp(gamma: Fraction, rng=secrets) -> bool:
    """True with probability exp(-gamma), exactly (CKS 2020, Algorithm 1): O(1) expected draws for
    gamma <= 1, and gamma > 1 is split into exp(-1) factors."""
    while gamma > 1:
        if not bernoulli_exp(Fraction(1), rng):
            return False
        gamma -= 1
    k = 1
    while rng.randbelow(gamma.denominator * k) < gamma.numerator:   # Bernoulli(gamma / k)
        k += 1
    return k % 2 == 1


def discrete_laplace(scale: Fraction, rng=secrets) -> int:
    """P(x) proportional to exp(-|x| / scale), exactly (CKS 2020, Algorithm 2).

    With scale = t/s: X = U + t*V is geometric with ratio exp(-1/t) (U uniform below t, kept with
    probability exp(-U/t); V geometric with ratio exp(-1)), so X // s is geometric with ratio
    exp(-s/t); a random sign, rejecting "-0", makes it two-sided. Every loop ends with probability
    bounded away from 0 whatever the scale: O(1) expected draws, where counting one Bernoulli
    trial at a time (the previous sampler) took O(scale) steps.
    """
    scale = Fraction(scale)
    if scale <= 0:
        raise ValueError(f"discrete Laplace scale must be positive, not {scale}")
    t, s = scale.numerator, scale.denominator
    while True:
        u = rng.randbelow(t)
        if not bernoulli_exp(Fraction(u, t), rng):
            continue
        v = 0
        while bernoulli_exp(Fraction(1), rng):
            v += 1
        y = (u + t * v) // s
        negative = rng.randbelow(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


# ---------------------------------------------------------------- the release

def _sql(catalog: Catalog) -> str:
    db = catalog.storage.clickhouse_database
    return f"""
        SELECT component, route, hour, count() AS ids, sum(events) AS requests, sum(latency) AS latency_ms_sum
        FROM (
            SELECT component, route, toStartOfHour(ts) AS hour,
                   least(count(), {CAP}) AS events,
                   least(sum(least(ifNull(latency_ms, 0), {LATENCY_CAP_MS})), {CAP * LATENCY_CAP_MS}) AS latency
            FROM {db}.{names.LOGS_TABLE}
            WHERE toDate(ts) = %(d)s AND session_id != ''
            GROUP BY component, route, hour, session_id
        )
        GROUP BY component, route, hour ORDER BY component, route, hour"""


def aggregates(client, catalog: Catalog, day: str) -> list[tuple]:
    """True (component, route, hour, distinct sessions, capped requests, capped latency sum) rows;
    lines without a session id are not read (see the module docstring)."""
    return client.query(_sql(catalog), parameters={"d": day}).result_rows


def query_id(catalog: Catalog) -> str:
    """What makes two releases of one day "the same query": the SQL and every parameter of the noise."""
    spec = {"sql": _sql(catalog), "k": catalog.privacy.k_anonymity, "epsilon": str(catalog.privacy.epsilon),
            "cap": CAP, "latency_cap_ms": LATENCY_CAP_MS, "measures": MEASURES, "mechanism": MECHANISM}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def export_release(client, catalog: Catalog, day: str) -> tuple[bytes, dict]:
    """(Parquet bytes of the noisy, k-anonymous groups, what this release is and spends)."""
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
    record = {"day": day, "k": k, "epsilon": float(epsilon),
              "epsilon_per_measure": {m: float(per_measure) for m in MEASURES},
              "sensitivity": sensitivity, "privacy_unit": "session_id (lines without one are left out)",
              "groups_published": len(rows), "groups_suppressed": suppressed, "mechanism": MECHANISM}
    return sink.getvalue(), record


def read_ledger(store) -> list[dict]:
    return [json.loads(line) for line in store.get(LEDGER).splitlines() if line.strip()] if store.exists(LEDGER) else []


def _write_ledger(store, records: list[dict]) -> None:
    store.put(LEDGER, b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records))


def _spent(record: dict) -> Fraction:
    # Records written before the per-release "epsilon" field called it "epsilon_total"; they spent it too.
    return Fraction(str(record.get("epsilon", record.get("epsilon_total", 0))))


def publish(store, client, catalog: Catalog, day: str, budget: float | None = None) -> dict:
    """Release the day once per query within its budget; return the ledger record ("reused": True
    when the stored release of the same day and query is served again, at no cost).

    `budget` is the total epsilon the day's releases may spend (default: the catalog's epsilon, one
    release per day). The ledger is written before the Parquet: a crash in between leaves the
    budget spent and no numbers out, and the next call draws them for that same release.
    """
    epsilon = Fraction(str(catalog.privacy.epsilon))
    cap = epsilon if budget is None else Fraction(str(budget))
    query = query_id(catalog)
    records = read_ledger(store)
    for i, record in enumerate(records):
        if record["day"] == day and record.get("query") == query:
            if store.exists(record["key"]):
                return {**record, "reused": True}
            data, fresh = export_release(client, catalog, day)   # the first draw never left the process
            records[i] = {**record, **fresh}
            _write_ledger(store, records)
            store.put(record["key"], data)
            return {**records[i], "reused": False}
    spent = sum((_spent(r) for r in records if r["day"] == day), Fraction(0))
    if spent + epsilon > cap:
        raise BudgetExceeded(
            f"release-private {day}: the day has spent epsilon {float(spent)} in {sum(r['day'] == day for r in records)} "
            f"release(s); another costs {float(epsilon)}, over the day's budget {float(cap)} (averaging releases "
            f"cancels their noise). Asking for the same query again re-serves the stored release; --budget raises the cap.")
    data, record = export_release(client, catalog, day)
    release = secrets.token_hex(8)
    record.update(release=release, query=query, key=f"gold/private/{day.replace('-', '/')}/release-{release}.parquet",
                  epsilon_spent_day=float(spent + epsilon), budget_day=float(cap))
    _write_ledger(store, records + [record])
    store.put(record["key"], data)
    return {**record, "reused": False}


if __name__ == "__main__":   # python -m jobs.privacy: the sampler's cost at the scale the latency sum uses
    import time

    class _Counting:
        draws = 0

        def randbelow(self, n: int) -> int:
            self.draws += 1
            return secrets.randbelow(n)

    for scale in (Fraction(3), Fraction(30000)):
        rng, n = _Counting(), 20000
        start = time.perf_counter()
        for _ in range(n):
            discrete_laplace(scale, rng)
        seconds = time.perf_counter() - start
        print(json.dumps({"scale": str(scale), "draws": n, "us_per_draw": round(seconds / n * 1e6, 1),
                          "randbelow_per_draw": round(rng.draws / n, 2)}))
