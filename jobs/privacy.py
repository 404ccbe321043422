"""Privacy-safe hourly aggregates (seed 000): epsilon-DP per session, k-anonymity on noisy counts, on a budget.

What is protected. Whether any one session's log lines of the day are in the data at all, and what
they say (which components, routes and hours it used, how many requests, their latencies): every
output of a release is epsilon-differentially private with respect to adding or removing all the
lines of one session, epsilon being the catalog's `privacy.epsilon`.

Privacy unit. The ephemeral `session_id`, within one day (a release covers one day; the budget
below covers the day's releases). A person with several sessions is protected per session, not as
a person. Lines without a session id are left out of the release entirely: they count neither as
people nor as requests, because their only other id (`correlation_id`) is unique per request, so
counting it would let one user making five requests pass k=5, and nothing would bound what one
unidentified user adds to the release.

Bound (contribution bounding). A session may appear in many groups (component, route, hour), and
each group it appears in would otherwise spend epsilon again. So each session keeps at most
MAX_GROUPS_PER_SESSION groups (G), chosen uniformly at random: ROW_NUMBER over each session's groups
ordered by a keyed SipHash of (session, group) under a fresh 128-bit key from `secrets` per release
(never recorded), so which groups survive depends on nothing but the session's own groups and the
key. Within a kept group it adds 1 to `ids`, at most CAP events to `requests`, and at most CAP x
LATENCY_CAP_MS to `latency_ms_sum` (each latency clamped to [0, LATENCY_CAP_MS]). Adding or removing
a session therefore moves each measure's vector of group values by at most, in L1,

    sensitivity(m) = G x per-group cap(m) x per-unit sensitivity(m)
                   = G x 1 (ids), G x CAP x 1 (requests), G x CAP x LATENCY_CAP_MS (latency_ms_sum)

and each of the three measures gets epsilon / 3, i.e. discrete Laplace noise of scale
sensitivity(m) / (epsilon / 3) (`noise_scales`), sampled exactly from integer randomness (Canonne,
Kamath, Steinke 2020) rather than floating-point `numpy.random.laplace`, whose low bits leak
(Mironov 2012). The three measures compose to epsilon.

Groups and k-anonymity. The groups considered are public, not read from the data: every component
of the catalog x its routes (templates, debug routes, "unmatched": what the loader admits) x the
day's 24 UTC hours (`groups`); lines of any other (component, route) are not released. Every one of
them gets a noisy `ids` even when no session used it, and a group is published when that noisy
count of distinct sessions is at least k: suppression is post-processing of a DP count, so it
reveals no exact count, whereas choosing groups from the data (or thresholding exact counts) would
let one session's presence show as a group appearing. The price: a small group may be suppressed,
and a group nobody used may be published with noisy figures (its true values are 0). Published
values are clamped at 0, which biases tiny counts upward.

What makes numbers noisier: a smaller epsilon, a larger G, CAP or LATENCY_CAP_MS (scale grows
linearly in each). What makes them biased low: a smaller G or CAP (sessions' extra groups and events
are dropped, not redistributed). With q = exp(-1 / scale(ids)), a group of n >= k sessions is
suppressed with probability q^(n-k+1) / (1+q) (about one half at n = k) and an unused group is
published with probability q^k / (1+q): at epsilon 1, G 4, k 5 (scale 12) that is 0.34, so a low
epsilon or high G fills the release with empty groups' noise; a larger k or epsilon filters it.

Budget. Every release of a day spends the catalog's `privacy.epsilon`, and the ledger
(`gold/private/budget.ndjson`) records it, with only what is safe to publish (the parameters, the
noise scales, how many groups were considered and published; not how many groups had data or were
suppressed). A day's releases may spend at most a total budget (default: one release's epsilon),
since averaging several noisy releases of the same data cancels the noise. Asking again for the
same day and query re-serves the stored release: the same noisy numbers published twice reveal
nothing new, so that costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.line_rules import component_routes
from vigia import conventions as names
from vigia.model import Catalog

MAX_GROUPS_PER_SESSION = 4   # groups (component, route, hour) one session may add to, chosen at random
CAP = 10                     # events one session may add to one group
LATENCY_CAP_MS = 1000        # per-event latency clamp for the published sum
MEASURES = ("ids", "requests", "latency_ms_sum")
PER_GROUP_CAP = {"ids": 1, "requests": CAP, "latency_ms_sum": CAP}           # units one session adds to a group
PER_UNIT = {"ids": 1, "requests": 1, "latency_ms_sum": LATENCY_CAP_MS}        # how much one unit can weigh
MECHANISM = ("discrete Laplace (CKS 2020, Algorithm 2), exact integer sampling; per-session contribution "
             "bounding (random groups by keyed hash); noisy k threshold over the catalog's groups")
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

def _sql(catalog: Catalog, max_groups: int) -> str:
    db = catalog.storage.clickhouse_database
    return f"""
        SELECT component, route, hour, count() AS ids, sum(events) AS requests, sum(latency) AS latency_ms_sum
        FROM (
            SELECT component, route, hour, events, latency,
                   row_number() OVER (
                       PARTITION BY session_id
                       ORDER BY sipHash64Keyed((toUInt64(%(k0)s), toUInt64(%(k1)s)), session_id, component, route, hour),
                                component, route, hour) AS pick
            FROM (
                SELECT session_id, component, route, toStartOfHour(ts) AS hour,
                       least(count(), {CAP}) AS events,
                       least(sum(greatest(least(ifNull(latency_ms, 0), {LATENCY_CAP_MS}), 0)), {CAP * LATENCY_CAP_MS}) AS latency
                FROM {db}.{names.LOGS_TABLE}
                WHERE toDate(ts) = %(d)s AND session_id != ''
                GROUP BY session_id, component, route, hour
            )
        )
        WHERE pick <= {int(max_groups)}
        GROUP BY component, route, hour ORDER BY component, route, hour"""


def _check(max_groups: int) -> int:
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
        raise ValueError(f"max_groups must be a positive integer, not {max_groups!r}")
    return max_groups


def _utc(hour: datetime) -> datetime:
    return hour.replace(tzinfo=timezone.utc) if hour.tzinfo is None else hour.astimezone(timezone.utc)


def aggregates(client, catalog: Catalog, day: str, max_groups: int = MAX_GROUPS_PER_SESSION,
               key: bytes | None = None) -> list[tuple]:
    """(component, route, hour, distinct sessions, capped requests, capped latency sum) rows of the
    groups with data, after contribution bounding: each session counted in at most `max_groups`
    groups, picked by a keyed hash under `key` (16 bytes; default a fresh `secrets` key, which is
    what a release uses: tests pass one to check the choice). Lines without a session id are not read."""
    key = secrets.token_bytes(16) if key is None else key
    if len(key) != 16:
        raise ValueError("the selection key is 16 bytes")
    params = {"d": day, "k0": int.from_bytes(key[:8], "big"), "k1": int.from_bytes(key[8:], "big")}
    rows = client.query(_sql(catalog, _check(max_groups)), parameters=params).result_rows
    return [(c, r, _utc(h), *rest) for c, r, h, *rest in rows]


def groups(catalog: Catalog, day: str) -> list[tuple[str, str, datetime]]:
    """The public groups of a day's release: each catalog component x the routes the loader admits
    for it x the day's 24 UTC hours; known before reading any data."""
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    routes = component_routes(catalog)
    return [(c, r, start + timedelta(hours=h)) for c in sorted(routes) for r in sorted(routes[c]) for h in range(24)]


def sensitivities(max_groups: int = MAX_GROUPS_PER_SESSION) -> dict[str, int]:
    """L1 sensitivity of each measure over a whole release: max groups x per-group cap x per-unit sensitivity."""
    return {m: _check(max_groups) * PER_GROUP_CAP[m] * PER_UNIT[m] for m in MEASURES}


def noise_scales(epsilon, max_groups: int = MAX_GROUPS_PER_SESSION) -> dict[str, Fraction]:
    """Discrete Laplace scale per measure: sensitivity / (epsilon / number of measures)."""
    per_measure = Fraction(str(epsilon)) / len(MEASURES)
    return {m: Fraction(s) / per_measure for m, s in sensitivities(max_groups).items()}


def query_id(catalog: Catalog, max_groups: int = MAX_GROUPS_PER_SESSION) -> str:
    """What makes two releases of one day "the same query": the SQL, the groups and every parameter of the noise."""
    spec = {"sql": _sql(catalog, _check(max_groups)), "k": catalog.privacy.k_anonymity,
            "epsilon": str(catalog.privacy.epsilon), "max_groups_per_session": max_groups, "cap": CAP,
            "latency_cap_ms": LATENCY_CAP_MS, "measures": MEASURES, "mechanism": MECHANISM,
            "groups": sorted([c, sorted(r)] for c, r in component_routes(catalog).items())}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def export_release(client, catalog: Catalog, day: str, max_groups: int = MAX_GROUPS_PER_SESSION,
                   noise=discrete_laplace) -> tuple[bytes, dict]:
    """(Parquet bytes of the noisy groups whose noisy session count is at least k, what this release
    is and spends). `noise(scale)` draws one integer (tests pass a recording or fixed one)."""
    k, epsilon = catalog.privacy.k_anonymity, Fraction(str(catalog.privacy.epsilon))
    scales = noise_scales(epsilon, max_groups)
    true = {(c, r, h): (ids, requests, latency) for c, r, h, ids, requests, latency
            in aggregates(client, catalog, day, max_groups)}
    considered, rows = groups(catalog, day), []
    for component, route, hour in considered:      # groups outside the catalog's are never published
        ids, requests, latency = true.get((component, route, hour), (0, 0, 0))
        noisy_ids = int(ids) + noise(scales["ids"])
        if noisy_ids < k:                           # the threshold sees only the noisy count
            continue
        rows.append({"component": component, "route": route, "hour": hour, "ids": noisy_ids,
                     "requests": max(0, int(requests) + noise(scales["requests"])),
                     "latency_ms_sum": max(0, int(latency) + noise(scales["latency_ms_sum"]))})
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("component", pa.string()), ("route", pa.string()), ("hour", pa.timestamp("s", tz="UTC")),
        ("ids", pa.int64()), ("requests", pa.int64()), ("latency_ms_sum", pa.int64())]))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    # Only what the release itself shows or what is public: not how many groups had data or fell under k.
    record = {"day": day, "k": k, "epsilon": float(epsilon),
              "epsilon_per_measure": {m: float(epsilon / len(MEASURES)) for m in MEASURES},
              "max_groups_per_session": max_groups, "per_group_cap": PER_GROUP_CAP,
              "sensitivity": sensitivities(max_groups), "noise_scale": {m: float(s) for m, s in scales.items()},
              "privacy_unit": "session_id, per day (lines without one are left out)",
              "groups_considered": len(considered), "groups_published": len(rows), "mechanism": MECHANISM}
    return sink.getvalue(), record


def read_ledger(store) -> list[dict]:
    return [json.loads(line) for line in store.get(LEDGER).splitlines() if line.strip()] if store.exists(LEDGER) else []


def _write_ledger(store, records: list[dict]) -> None:
    store.put(LEDGER, b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records))


def _spent(record: dict) -> Fraction:
    # Records written before the per-release "epsilon" field called it "epsilon_total"; they spent it too.
    return Fraction(str(record.get("epsilon", record.get("epsilon_total", 0))))


def publish(store, client, catalog: Catalog, day: str, budget: float | None = None,
            max_groups: int = MAX_GROUPS_PER_SESSION) -> dict:
    """Release the day once per query within its budget; return the ledger record ("reused": True
    when the stored release of the same day and query is served again, at no cost).

    `budget` is the total epsilon the day's releases may spend (default: the catalog's epsilon, one
    release per day). The ledger is written before the Parquet: a crash in between leaves the
    budget spent and no numbers out, and the next call draws them for that same release.
    """
    epsilon = Fraction(str(catalog.privacy.epsilon))
    cap = epsilon if budget is None else Fraction(str(budget))
    query = query_id(catalog, max_groups)
    records = read_ledger(store)
    for i, record in enumerate(records):
        if record["day"] == day and record.get("query") == query:
            if store.exists(record["key"]):
                return {**record, "reused": True}
            data, fresh = export_release(client, catalog, day, max_groups)   # the first draw never left the process
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
    data, record = export_release(client, catalog, day, max_groups)
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
