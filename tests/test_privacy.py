"""The private release: sessions as the privacy unit, the per-day budget, and the exact sampler."""

from __future__ import annotations

import io
import json
import math
import secrets
import statistics
from fractions import Fraction
from pathlib import Path

import clickhouse_connect
import pyarrow.parquet as pq
import pytest

from jobs import privacy
from jobs.store import LocalStore
from tests.spool import write_spool
from tests.test_rollup import D1, D2, cli

ROOT = Path(__file__).resolve().parent.parent


def ship(tmp: Path) -> str:
    """Two days of logs (seven sessions in one hour each) rolled up into chDB; returns its DSN."""
    from vigia.catalog import load
    write_spool(load(ROOT / "stack.yaml"), tmp / "spool", [2, 1], per_day=70)
    dsn = f"chdb://{tmp / 'ch'}"
    result = cli("rollup", "--spool", str(tmp / "spool"), "--store", f"file://{tmp / 'store'}", "--clickhouse", dsn,
                 "--key-file", str(tmp / "key"))
    assert result.returncode == 0, result.stderr
    return dsn


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    return {"client": clickhouse_connect.get_client(dsn=ship(tmp_path_factory.mktemp("privacy")))}


@pytest.fixture(scope="module")
def cli_dsn(tmp_path_factory):
    """Its own chDB folder: an in-process client locks its folder against the CLI's process."""
    return ship(tmp_path_factory.mktemp("privacy-cli"))


def with_epsilon(catalog, epsilon: float):
    return catalog.model_copy(update={"privacy": catalog.privacy.model_copy(update={"epsilon": epsilon})})


def test_a_day_is_released_once_and_asking_again_serves_the_same_numbers_free(catalog, cli_dsn, tmp_path):
    store = LocalStore(tmp_path / "store")
    args = ("release-private", "--day", D1, "--store", store.url, "--clickhouse", cli_dsn)
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout.splitlines()[-1])["release"]
    assert record["reused"] is False and record["k"] == catalog.privacy.k_anonymity
    assert record["epsilon"] == record["epsilon_spent_day"] == record["budget_day"] == catalog.privacy.epsilon
    # Every catalog group gets a noisy count and is published when that reaches k (so how many are
    # published is random): only what the release shows, and no count of suppressed groups, is recorded.
    table = pq.read_table(store.root / record["key"]).to_pylist()
    assert record["groups_considered"] == len(privacy.groups(catalog, D1)) and "groups_suppressed" not in record
    assert record["groups_published"] == len(table) and all(row["ids"] >= record["k"] for row in table)
    assert all(isinstance(row[m], int) for row in table for m in privacy.MEASURES)
    assert record["noise_scale"] == {m: float(s) for m, s in privacy.noise_scales(catalog.privacy.epsilon).items()}
    parquet, ledger = store.get(record["key"]), store.get(privacy.LEDGER)

    again = cli(*args)
    assert again.returncode == 0, again.stderr
    served = json.loads(again.stdout.splitlines()[-1])["release"]
    assert served["reused"] is True and served["release"] == record["release"]
    assert store.get(record["key"]) == parquet and store.get(privacy.LEDGER) == ledger   # nothing spent, nothing redrawn
    assert [k for k in store.list("gold/private/") if k.endswith(".parquet")] == [record["key"]]

    refused = cli("release-private", "--day", D2, "--store", store.url, "--clickhouse", cli_dsn, "--budget", "0")
    assert refused.returncode == 1 and "budget" in refused.stderr and "Traceback" not in refused.stderr
    assert store.get(privacy.LEDGER) == ledger


def test_another_query_of_a_released_day_must_fit_the_days_budget(catalog, shipped, tmp_path):
    store, client = LocalStore(tmp_path / "store"), shipped["client"]
    privacy.publish(store, client, catalog, D1)
    ledger = store.get(privacy.LEDGER)
    with pytest.raises(privacy.BudgetExceeded, match="budget"):    # default budget: one release's epsilon
        privacy.publish(store, client, with_epsilon(catalog, 0.5), D1)
    assert store.get(privacy.LEDGER) == ledger
    second = privacy.publish(store, client, with_epsilon(catalog, 0.5), D1, budget=1.5)
    assert second["reused"] is False and second["epsilon"] == 0.5 and second["epsilon_spent_day"] == 1.5
    with pytest.raises(privacy.BudgetExceeded):
        privacy.publish(store, client, with_epsilon(catalog, 0.25), D1, budget=1.5)
    assert privacy.publish(store, client, catalog, D2)["epsilon_spent_day"] == 1.0    # another day, its own budget
    records = privacy.read_ledger(store)
    assert [(r["day"], r["epsilon"]) for r in records] == [(D1, 1.0), (D1, 0.5), (D2, 1.0)]
    assert len({r["query"] for r in records if r["day"] == D1}) == 2


def test_a_crash_after_spending_redraws_the_same_release_without_spending_again(catalog, shipped, tmp_path):
    class Crashing(LocalStore):
        def put(self, key, data):
            if key.endswith(".parquet"):
                raise OSError("killed before the Parquet was written")
            super().put(key, data)

    with pytest.raises(OSError):
        privacy.publish(Crashing(tmp_path / "store"), shipped["client"], catalog, D1)
    store = LocalStore(tmp_path / "store")
    [spent] = privacy.read_ledger(store)
    retried = privacy.publish(store, shipped["client"], catalog, D1)
    assert retried["release"] == spent["release"] and retried["reused"] is False and store.exists(spent["key"])
    assert [r["release"] for r in privacy.read_ledger(store)] == [spent["release"]]


def insert(client, rows) -> None:
    """(ts, component, route, session_id, correlation_id) lines straight into the logs table."""
    client.command("INSERT INTO vigia.logs (ts, component, route, session_id, correlation_id) VALUES "
                   + ", ".join(f"('{ts}', '{c}', '{route}', '{sid}', '{cid}')" for ts, c, route, sid, cid in rows))


def test_lines_without_a_session_count_neither_as_people_nor_as_requests(catalog, shipped):
    client = shipped["client"]
    one, five = ("core", "/v1/items"), ("core", "/v1/items/{item_id}")
    rows = [(f"{D2} 05:0{i}:00", "policy", "/v1/eval", "", f"anon{i}") for i in range(9)]     # 9 requests, no session
    rows += [(f"{D2} 05:0{i}:00", *one, "u1", f"one{i}") for i in range(6)]                   # 1 user, 6 requests
    rows += [(f"{D2} 05:0{i}:00", *five, f"u{i}", f"five{i}") for i in range(5)]              # 5 users
    rows += [(f"{D2} 05:0{i}:00", "core", "/v1/nowhere", f"x{i}", f"x{i}") for i in range(9)]  # not a catalog route
    insert(client, rows)
    true = {(c, route): (ids, requests) for c, route, hour, ids, requests, _ in privacy.aggregates(client, catalog, D2)
            if c in ("core", "policy") and hour.hour == 5}
    assert true == {one: (1, 6), five: (5, 5), ("core", "/v1/nowhere"): (9, 9)}
    data, record = privacy.export_release(client, catalog, D2, noise=lambda scale: 0)   # noise off: exact threshold
    published = {(r["component"], r["route"]) for r in pq.read_table(io.BytesIO(data)).to_pylist() if r["hour"].hour == 5}
    assert published == {five}      # not the lone user, not the anonymous lines, not a route outside the catalog
    assert "groups_suppressed" not in record and record["privacy_unit"].startswith("session_id")


def test_a_session_in_many_groups_counts_in_at_most_max_groups_of_them(catalog, shipped):
    client = shipped["client"]
    routes = ("/v1/tools/{tool}", "/v1/sessions/{session_id}/events")
    heavy = (routes[0], 10)
    insert(client, [(f"{D2} {h:02d}:{m:02d}:00", "office", r, "spread", f"sp{h}-{r}-{m}")    # 24 groups, one session
                    for h in range(10, 22) for r in routes for m in range(12 if (r, h) == heavy else 2)])

    def kept(max_groups, key=None):
        return {(r, h.hour): (ids, requests) for c, r, h, ids, requests, _
                in privacy.aggregates(client, catalog, D2, max_groups, key) if c == "office"}

    assert privacy.MAX_GROUPS_PER_SESSION == 4
    for g in (1, 3, privacy.MAX_GROUPS_PER_SESSION):
        groups = kept(g)
        assert len(groups) == g and all(ids == 1 and requests <= privacy.CAP for ids, requests in groups.values())
    everything = kept(100)
    assert len(everything) == 24 and everything[heavy] == (1, privacy.CAP)    # 12 events, capped within the group
    key = secrets.token_bytes(16)
    assert kept(4, key) == kept(4, key)                                        # the key decides the choice...
    chosen = [set(kept(4)) for _ in range(60)]                                 # ...and a fresh key per release
    assert len({frozenset(c) for c in chosen}) > 1
    assert set().union(*chosen) == set(everything)    # every group can be kept (P(miss one) ~ 24 (5/6)^60 = 4e-4)


def test_the_noise_scale_is_max_groups_x_per_group_cap_x_per_unit_sensitivity_over_epsilon(catalog, shipped):
    drawn = []

    def recording(scale):
        drawn.append(scale)
        return 0

    for epsilon, g, expected in [(1.0, privacy.MAX_GROUPS_PER_SESSION, {"ids": 12, "requests": 120, "latency_ms_sum": 120_000}),
                                 (0.25, 3, {"ids": 36, "requests": 360, "latency_ms_sum": 360_000})]:
        drawn.clear()
        _, record = privacy.export_release(shipped["client"], with_epsilon(catalog, epsilon), D2, g, noise=recording)
        formula = {m: Fraction(g * privacy.PER_GROUP_CAP[m] * privacy.PER_UNIT[m]) / (Fraction(str(epsilon)) / 3)
                   for m in privacy.MEASURES}
        assert formula == expected == privacy.noise_scales(epsilon, g)
        assert record["noise_scale"] == {m: float(v) for m, v in expected.items()}
        assert record["sensitivity"] == {"ids": g, "requests": g * privacy.CAP,
                                         "latency_ms_sum": g * privacy.CAP * privacy.LATENCY_CAP_MS}
        # ids is drawn for every catalog group (the threshold needs it), the sums for the published ones
        assert drawn.count(expected["ids"]) == record["groups_considered"] == len(privacy.groups(catalog, D2))
        assert drawn.count(expected["requests"]) == drawn.count(expected["latency_ms_sum"]) == record["groups_published"]
        assert len(drawn) == record["groups_considered"] + 2 * record["groups_published"]


def test_k_anonymity_thresholds_the_noisy_session_count(catalog, shipped):
    client = shipped["client"]
    five, one = ("policy", "/v1/eval"), ("policy", "/v1/jwks")
    insert(client, [(f"{D2} 07:0{i}:00", *five, f"p{i}", f"p{i}") for i in range(5)]
           + [(f"{D2} 07:0{i}:00", *one, "p9", f"q{i}") for i in range(3)])

    def release(shift):
        data, _ = privacy.export_release(client, catalog, D2, noise=lambda scale: shift)
        return {(r["component"], r["route"]): r["ids"] for r in pq.read_table(io.BytesIO(data)).to_pylist()
                if r["component"] == "policy" and r["hour"].hour == 7}

    assert release(0) == {five: 5}
    assert release(-1) == {}                       # 5 sessions, noisy 4 < k: suppressed
    assert release(4) == {five: 9, one: 5}         # 1 session, noisy 5 >= k: published with that noisy count
    unused = {(c, r): 5 for c, r, _ in privacy.groups(catalog, D2) if c == "policy"}
    assert len(unused) > 2 and release(5) == unused | {five: 10, one: 6}   # nobody used them: noise alone publishes


# ---------------------------------------------------------------- the sampler

def pmf(x: int, scale: Fraction) -> float:
    q = math.exp(-1 / scale)
    return (1 - q) / (1 + q) * q ** abs(x)


@pytest.mark.parametrize("scale", [Fraction(3, 2), Fraction(4)])
def test_the_sampler_matches_the_discrete_laplace_pmf(scale):
    n = 30000
    draws = [privacy.discrete_laplace(scale) for _ in range(n)]
    assert all(isinstance(x, int) for x in draws)
    edge = 0
    while n * pmf(edge + 1, scale) >= 20:
        edge += 1
    tail = sum(pmf(x, scale) for x in range(edge + 1, 10 * edge + 200))   # P(X > edge) = P(X < -edge)
    observed = [sum(x < -edge for x in draws), *(draws.count(x) for x in range(-edge, edge + 1)),
                sum(x > edge for x in draws)]
    expected = [n * tail, *(n * pmf(x, scale) for x in range(-edge, edge + 1)), n * tail]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    dof = len(observed) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (chi2, dof)   # ~1e-5 false alarm rate


def test_the_sampler_has_the_right_moments_at_a_large_scale():
    scale, n = Fraction(30000), 20000
    draws = [privacy.discrete_laplace(scale) for _ in range(n)]
    q = math.exp(-1 / scale)
    variance = 2 * q / (1 - q) ** 2
    assert abs(statistics.mean(draws)) < 5 * math.sqrt(variance / n)
    assert abs(statistics.pvariance(draws) - variance) < 0.1 * variance


class Counting:
    """secrets, counting the integer draws the sampler asks for."""

    def __init__(self):
        self.draws = 0

    def randbelow(self, n: int) -> int:
        self.draws += 1
        return secrets.randbelow(n)


@pytest.mark.parametrize("scale", [Fraction(1, 3), Fraction(3), Fraction(30000), Fraction(3_000_000, 7)])
def test_the_sampler_takes_a_bounded_number_of_draws_whatever_the_scale(scale):
    # A geometric counted one trial at a time needs about `scale` draws (30000 here: 0.1 s a draw);
    # CKS Algorithm 2 needs about ten whatever the scale (python -m jobs.privacy prints the time).
    rng, n = Counting(), 3000
    for _ in range(n):
        privacy.discrete_laplace(scale, rng)
    assert rng.draws / n < 25
