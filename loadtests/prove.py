"""`vigia prove`: load the running embedded stack with Locust, induce the scenarios' faults through
the services' runtime flags, and judge from Prometheus, Alertmanager's deliveries and the stored
data whether seed 004's definition of done holds. Writes report.json, report.md and PNG plots.

The full proof runs, in order: steady load (check 1; page alerts must stay quiet), chaos-light
(quiet too), WebSocket kills (check 2), the fault scenarios in three groups (errors + slow +
jwks, then burst with core down; checks 3 and 6), the rollup of the day so far (checks 4 and 5),
the capacity steps (30k req/min, then up or down to where the SLO breaks) and the dashboards'
queries (check 7). `--quick` leaves out chaos-light and the capacity steps. `--scenario NAME`
runs only the named scenarios, one check each.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import websockets

from dashboards.panels import CLICKHOUSE, panel_queries
from loadtests import stack
from loadtests.scenarios import BURST_QUOTA, Scenario, reset_flags, scenarios, uncovered_pages
from vigia.model import Catalog

ADMIN_HEADER = "x-admin-token"
SETTLE_S = 6  # one scrape (5 s in the local profile) and a little: the last samples of a phase are in
SIDE_USERS = {"SessionUser": 4, "ReconnectingSessionUser": 4, "BurstUser": 2}  # fixed counts beside GatewayUsers
GATEWAY_USERS = 20
SLO_P99_MS, SLO_ERRORS = 300, 0.003
CAPACITY_RATE = 30_000
RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


@dataclass
class Check:
    name: str
    passed: bool
    figures: dict = field(default_factory=dict)


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} | ({"time": at} if at else {})
        r = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN -> None

    def series(self, expr: str, start: float, end: float, step: float = 5) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query_range",
                      params={"query": expr, "start": start, "end": end, "step": step}, timeout=30)
        r.raise_for_status()
        return r.json()["data"]["result"]


class Stack:
    """URLs, admin token and flags of a running embedded stack."""

    def __init__(self, catalog: Catalog, catalog_path: Path, data: Path):
        prof = catalog.profiles["local"]
        self.catalog, self.catalog_path, self.data = catalog, catalog_path, data
        self.url = {c.name: f"http://127.0.0.1:{c.port}" for c in catalog.components}
        self.prometheus = Prometheus(f"http://127.0.0.1:{prof.prometheus_port}")
        self.sink = f"http://127.0.0.1:{prof.webhook_sink_port}"
        self.token = (data / "run" / "admin-token").read_text().strip()

    def flags(self, component: str, **flags) -> None:
        httpx.post(f"{self.url[component]}/_flags", json=flags, headers={ADMIN_HEADER: self.token}, timeout=5).raise_for_status()

    def tokens(self) -> dict[str, str]:
        return {t: httpx.post(f"{self.url['policy']}/v1/tokens", json={"tenant": t}, headers={ADMIN_HEADER: self.token},
                              timeout=5).json()["token"] for t in self.catalog.tenants}

    def notifications(self) -> list[dict]:
        return httpx.get(f"{self.sink}/alerts", timeout=5).json()

    def delivered_since(self, alertname: str, since: float) -> dict | None:
        """The first notification received at or after `since` that carries `alertname` firing."""
        for n in self.notifications():
            if n["received_at"] >= since and any(a["labels"].get("alertname") == alertname and a["status"] == "firing"
                                                 for a in n["notification"].get("alerts", [])):
                return {"delivered_s": round(n["received_at"] - since, 1)}
        return None

    def firing(self, since: float) -> dict[str, dict]:
        """Alerts that started firing at or after `since` and reached the sink: name -> first times."""
        found: dict[str, dict] = {}
        for n in self.notifications():
            for alert in n["notification"].get("alerts", []):
                name, started = alert["labels"].get("alertname"), _epoch(alert["startsAt"])
                if alert["status"] == "firing" and started >= since - 1 and name not in found:
                    found[name] = {"fired_s": round(max(started - since, 0), 1), "delivered_s": round(n["received_at"] - since, 1),
                                   "labels": {k: v for k, v in alert["labels"].items() if k != "alertname"}}
        return found


def _epoch(rfc3339: str) -> float:
    """Alertmanager's RFC 3339 times carry nanoseconds; Python parses up to microseconds."""
    match = RFC3339.fullmatch(rfc3339)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {rfc3339!r}")
    head, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + float(f"0{fraction}" if fraction else 0)


class Locust:
    """One headless Locust run in the background; `stats()` reads its CSV once it has ended."""

    def __init__(self, s: Stack, tokens: dict, users: tuple[str, ...], rate: float, seconds: int, out: Path, tag: str):
        side = [{"user_class_name": u, "fixed_count": SIDE_USERS[u]} for u in users if u in SIDE_USERS]
        total = GATEWAY_USERS * ("GatewayUser" in users) + sum(u["fixed_count"] for u in side)
        env = dict(os.environ, VIGIA_TOKENS=json.dumps(tokens), VIGIA_RATE_PER_MIN=str(rate), VIGIA_USERS=str(GATEWAY_USERS),
                   VIGIA_OFFICE_URL=s.url["office"])
        self.csv = out / f"locust-{tag}"
        cmd = [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")), "--headless",
               "-u", str(total), "-r", str(total), "-t", f"{seconds}s", "--host", s.url["gateway"], "--csv", str(self.csv),
               "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING", *users]
        if side:
            cmd += ["--config-users", json.dumps(side)]
        self.seconds = seconds
        self.process = subprocess.Popen(cmd, env=env, stdout=open(out / "locust.log", "ab"), stderr=subprocess.STDOUT)

    def wait(self) -> None:
        self.process.wait(timeout=self.seconds + 60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def stats(self) -> dict[str, dict]:
        path = Path(f"{self.csv}_stats.csv")
        if not path.exists():
            return {}
        with path.open() as handle:
            return {row["Name"]: {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                                  "p99_ms": row["99%"]} for row in csv.DictReader(handle)}


def slo_figures(prom: Prometheus, catalog: Catalog, start: float, end: float, load_seconds: float) -> dict:
    """Latency quantiles and error ratio of gateway and core on the internal routes over [start, end],
    and the rate the gateway served over the `load_seconds` Locust ran."""
    window, figures = f"{max(int(end - start), 10)}s", {}
    for component in ("gateway", "core"):
        duration = catalog.http_metric(component, "duration").name
        requests = catalog.http_metric(component, "requests").name
        for q in (0.5, 0.95, 0.99):
            value = prom.scalar(f'histogram_quantile({q}, sum by (le) (increase({duration}_bucket{{route!~"/_.*"}}[{window}])))', end)
            figures[f"{component}_p{int(q * 100)}_ms"] = round(value * 1000, 1) if value is not None else None
        errors = prom.scalar(f'sum(increase({requests}{{route!~"/_.*", code=~"5.."}}[{window}])) or vector(0)', end) or 0
        total = prom.scalar(f'sum(increase({requests}{{route!~"/_.*"}}[{window}]))', end) or 0
        figures[f"{component}_requests"] = round(total)
        figures[f"{component}_error_ratio"] = round(errors / total, 5) if total else None
    # Served: the rise of the gateway's counter between its last samples before and after the load.
    # increase() would extrapolate to the window's edges and read up to a scrape interval high.
    served = f'sum({catalog.http_metric("gateway", "requests").name}{{route!~"/_.*"}}) or vector(0)'
    figures["achieved_req_per_min"] = round(((prom.scalar(served, end) or 0) - (prom.scalar(served, start) or 0))
                                            / load_seconds * 60)
    return figures


def slo_misses(figures: dict, rate: float) -> list[str]:
    """What keeps a load step from holding the SLO: p99 >= 300 ms or errors >= 0.3 % on gateway or
    core, or less than 90 % of the offered rate served (the machine saturated). Empty when it held."""
    misses = []
    if figures["achieved_req_per_min"] < 0.9 * rate:
        misses.append(f"served {figures['achieved_req_per_min']} of {rate:.0f} req/min offered")
    for component in ("gateway", "core"):
        p99, errors = figures[f"{component}_p99_ms"], figures[f"{component}_error_ratio"]
        if p99 is None or p99 >= SLO_P99_MS:
            misses.append(f"{component} p99 {p99} ms")
        if errors is None or errors >= SLO_ERRORS:
            misses.append(f"{component} errors {errors}")
    return misses


def slo_held(figures: dict, rate: float) -> bool:
    return not slo_misses(figures, rate)


def pages_since(s: Stack, since: float) -> list[str]:
    """Page alerts that became active (pending or firing) at or after `since`.

    Prometheus keeps each active alert's activation time as the value of ALERTS_FOR_STATE, so an
    alert still firing from an earlier fault does not count against a later phase.
    """
    active = {r["metric"]["alertname"] for r in s.prometheus.query(f'ALERTS_FOR_STATE{{severity="page"}} >= {since - 1:.0f}')}
    delivered = {name for name, seen in s.firing(since).items() if seen["labels"].get("severity") == "page"}
    return sorted(active | delivered)


def run_load(s: Stack, scenario: Scenario, tokens: dict, rate: float, seconds: int, report: Path, echo) -> dict:
    """Run a load scenario (its faults on for its duration) and return its SLO figures and quiet pages."""
    echo(f"{scenario.name}: {rate:.0f} req/min for {seconds}s ({scenario.description})")
    for component, flags in scenario.flags.items():
        s.flags(component, **flags)
    start = time.time()
    load = Locust(s, tokens, scenario.users, rate, seconds, report, f"{scenario.name}-{int(rate)}")
    try:
        load.wait()
    finally:
        for component, flags in reset_flags(scenario).items():
            s.flags(component, **flags)
    end = time.time()
    time.sleep(SETTLE_S)
    figures = slo_figures(s.prometheus, s.catalog, start, end + SETTLE_S - 1, seconds)
    figures["pages_during_run"] = pages_since(s, start)
    figures["locust"] = load.stats()
    return figures


def steady_check(s: Stack, tokens: dict, rate: float, seconds: int, report: Path, echo) -> Check:
    figures = run_load(s, scenarios(s.catalog)["steady"], tokens, rate, seconds, report, echo)
    figures["target_req_per_min"] = rate
    return Check(f"1. steady load at {rate:.0f} req/min: p99 < 300 ms and errors < 0.3 % on internal routes",
                 slo_held(figures, rate) and not figures["pages_during_run"], figures)


def chaos_check(s: Stack, tokens: dict, rate: float, seconds: int, report: Path, echo) -> Check:
    figures = run_load(s, scenarios(s.catalog)["chaos-light"], tokens, rate, seconds, report, echo)
    return Check(f"chaos-light at {rate:.0f} req/min: 1 % of requests delayed 120-300 ms, the SLOs hold and nothing pages",
                 slo_held(figures, rate) and not figures["pages_during_run"], figures)


async def _exact_replay(office: str, catalog: Catalog) -> dict:
    """Kill a socket, publish more events than the buffer keeps, reconnect: exactly the last 100 come back."""
    session = f"prove-{int(time.time())}"
    ws_url = office.replace("http", "ws", 1) + f"/v1/sessions/{session}/events"
    async with httpx.AsyncClient(timeout=5) as client:
        async def publish(n: int) -> list[int]:
            ids = []
            for _ in range(n):
                r = await client.post(f"{office}/v1/tools/fetch_calendar", json={"session_id": session},
                                      headers={"x-tenant": catalog.tenants[0]})
                if r.status_code == 200:
                    ids.append(r.json()["event_id"])
            return ids

        async with websockets.connect(ws_url) as ws:
            await ws.recv()
            first = await publish(5)
            seen = [json.loads(await ws.recv())["id"] for _ in first]
            ws.transport.abort()  # killed: no close frame
        missed = await publish(130)
        start = time.perf_counter()
        async with websockets.connect(f"{ws_url}?last_event_id={seen[-1]}") as ws:
            replayed = [json.loads(await ws.recv())["id"] for _ in range(min(100, len(missed)))]
            ready = json.loads(await ws.recv())
        return {"missed": len(missed), "replayed": len(replayed), "exact_last_100": replayed == missed[-100:]
                and ready.get("type") == "ready", "reconnect_ms": round((time.perf_counter() - start) * 1000, 1)}


def ws_check(s: Stack, tokens: dict, rate: float, seconds: int, report: Path, echo) -> Check:
    reconnects = "office_ws_reconnect_duration_seconds"
    before = s.prometheus.scalar(f"sum({reconnects}_count)") or 0
    exact = asyncio.run(_exact_replay(s.url["office"], s.catalog))
    load = run_load(s, scenarios(s.catalog)["ws-kill"], tokens, rate / 2, seconds, report, echo)
    replays = load["locust"].get("ws replay", {"requests": 0, "failures": 0})
    after = s.prometheus.scalar(f"sum({reconnects}_count)") or 0
    p95 = s.prometheus.scalar(f"histogram_quantile(0.95, sum by (le) (increase({reconnects}_bucket[{seconds + SETTLE_S}s])))")
    figures = {"killed_socket": exact, "locust_reconnects": replays["requests"], "locust_wrong_replays": replays["failures"],
               "reconnects_counted_by_office": round(after - before), "reconnect_p95_ms": round(p95 * 1000, 1) if p95 else None}
    passed = (exact["exact_last_100"] and replays["requests"] > 0 and replays["failures"] == 0
              and after - before >= replays["requests"] and p95 is not None and p95 < 0.5)
    return Check("2. a killed WebSocket reconnects and recovers the last 100 events", passed, figures)


def backpressure_probe(s: Stack, tokens: dict) -> dict:
    """Tool calls while capacity is lowered: BACKPRESSURE answers whose retry_after_ms fits the refill."""
    headers = {"authorization": f"Bearer {tokens[s.catalog.tenants[0]]}"}
    answers = [httpx.post(f"{s.url['gateway']}/v1/tools/create_task", json={}, headers=headers, timeout=5) for _ in range(10)]
    refused = [a for a in answers if a.status_code == 503]
    retry = [a.json()["error"]["retry_after_ms"] for a in refused]
    headers_ok = all(int(a.headers["retry-after"]) * 1000 >= r for a, r in zip(refused, retry))
    return {"refused": len(refused), "retry_after_ms": retry[:5], "retry_after_header_ok": headers_ok,
            "retry_after_correct": bool(retry) and headers_ok and all(0 < r <= 1000 / BURST_QUOTA for r in retry),
            "token": refused[0].json()["error"]["token"] if refused else None}


def run_faults(s: Stack, groups: list[list[Scenario]], tokens: dict, rate: float, timeout: int, report: Path, echo) -> dict:
    """Induce each group's faults under background load, one group after the other, and wait (up to
    `timeout` per group) for the alerts they must fire to reach the sink.

    Scenarios of one group do not disturb each other's signals: 5xx, latency and JWKS faults run
    together; a burst starves every route of capacity, so it runs apart from them, beside core
    being stopped (which inhibits only core's alerts). Returns each alert's times, the missing
    ones and the backpressure probe.
    """
    out: dict = {"alerts": {}, "missing": [], "gateway_backpressure_rise": 0.0}
    for group in groups:
        out = _fault_group(s, group, tokens, rate, timeout, report, echo, out)
    return out


def _fault_group(s: Stack, group: list[Scenario], tokens: dict, rate: float, timeout: int, report: Path, echo,
                 out: dict) -> dict:
    users = tuple(dict.fromkeys(u for sc in group for u in sc.users)) or ("GatewayUser",)
    expected = {alert: sc for sc in group for alert in sc.fires}
    echo(f"faults for up to {timeout}s: {', '.join(sc.name for sc in group)} (must fire {', '.join(expected)})")
    bp_before = s.prometheus.scalar("sum(gateway_backpressure_total)") or 0
    load = Locust(s, tokens, users, rate / 2, timeout, report, "faults-" + "-".join(sc.name for sc in group))
    start = time.time()
    for sc in group:
        for component, flags in sc.flags.items():
            s.flags(component, **flags)
        if sc.stops:
            stack.down(s.catalog, s.catalog_path, s.data, echo=lambda *_: None, only=sc.stops)
    try:
        if any(sc.name == "burst" for sc in group):
            out["probe"] = backpressure_probe(s, tokens)
        while time.time() < start + timeout and not set(expected) <= set(out["alerts"]):
            for name, seen in s.firing(start).items():
                if name in expected and name not in out["alerts"]:
                    out["alerts"][name] = seen | {"scenario": expected[name].name}
                    echo(f"  {name} fired after {seen['fired_s']}s, delivered after {seen['delivered_s']}s")
            time.sleep(2)
    finally:
        load.stop()
        for sc in group:
            for component, flags in reset_flags(sc).items():
                s.flags(component, **flags)
        if any(sc.stops for sc in group):
            stack.up(s.catalog, s.catalog_path, s.data, echo=lambda *_: None)
    out["gateway_backpressure_rise"] += (s.prometheus.scalar("sum(gateway_backpressure_total)") or 0) - bp_before
    out["missing"] = sorted(set(out["missing"]) | (set(expected) - set(out["alerts"])))
    return out


def backpressure_check(faults: dict) -> Check:
    probe = faults.get("probe", {})
    alert = faults["alerts"].get("OfficeBackpressureBurn")
    passed = bool(probe.get("retry_after_correct")) and probe.get("token") == "BACKPRESSURE" \
        and faults["gateway_backpressure_rise"] > 0 and alert is not None
    return Check("3. induced BACKPRESSURE: ErrorToken with a correct retry_after_ms, the metric rises, the alert fires "
                 "and reaches the sink", passed,
                 probe | {"gateway_backpressure_rise": faults["gateway_backpressure_rise"], "alert": alert})


def alerts_check(s: Stack, faults: dict, t0: float, quiet: dict[str, list[str]], chosen: dict[str, Scenario]) -> Check:
    watchdog = s.delivered_since("Watchdog", t0)  # always firing since the stack came up: any delivery during the run
    uncovered = uncovered_pages(s.catalog, chosen)
    noisy = {phase: pages for phase, pages in quiet.items() if pages}
    passed = watchdog is not None and not faults["missing"] and not uncovered and not noisy
    return Check("6. Watchdog reaches the sink; every page alert fires under its induced fault and is delivered; "
                 "page alerts stay quiet under steady load and chaos-light", passed,
                 {"watchdog": watchdog, "alerts": faults["alerts"], "missing": faults["missing"],
                  "pages_without_a_scenario": uncovered, "pages_while_quiet": quiet})


def rollup_checks(s: Stack, report: Path, echo) -> tuple[Check, Check, Path]:
    """Roll up a snapshot of today's spool, verify it, and scan everything written."""
    echo("rollup of a snapshot of today's spool, verify, scan")
    catalog, data = s.catalog, s.data
    proof = data / "proof"
    shutil.rmtree(proof, ignore_errors=True)
    shutil.copytree(data / "spool", proof / "spool", ignore=shutil.ignore_patterns("archive", "*.sqlite3*", "keys"))
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    vigia = [sys.executable, "-c", "from vigia.cli import run; run()"]
    common = ["--catalog", str(s.catalog_path)]
    clickhouse = f"chdb://{proof / 'clickhouse'}"
    rolled = subprocess.run(vigia + ["rollup", "--spool", str(proof / "spool"), "--store", f"file://{proof / 'store'}",
                                     "--clickhouse", clickhouse, "--key-file", str(proof / "rollup.key"),
                                     "--include-today", *common], capture_output=True, text=True, timeout=600)
    verified = subprocess.run(vigia + ["verify", "--store", f"file://{proof / 'store'}", "--date", today,
                                       "--clickhouse", clickhouse, "--key-file", str(proof / "rollup.key"), *common],
                              capture_output=True, text=True, timeout=600)
    from loadtests.scan import scan_all
    scan = scan_all(catalog, proof, clickhouse, [f"{s.url[c.name]}/_metrics" for c in catalog.components])
    scan_figures = {k: v for k, v in scan.items() if k != "findings"} | {"findings": len(scan["findings"]),
                                                                        "examples": scan["findings"][:5]}
    privacy = Check("4. privacy scan of logs, trails, /_metrics pages, ClickHouse tables and stored objects: 0 findings",
                    not scan["findings"] and scan["lines"] > 0, scan_figures)
    day_dir = proof / "store" / catalog.storage.logs_prefix / today.replace("-", "/")
    roll = Check("5. the daily NDJSON roll is in the object store with its checksum, and vigia verify passes",
                 rolled.returncode == 0 and verified.returncode == 0 and (day_dir / "SHA256SUMS").exists(),
                 {"objects": sorted(p.name for p in day_dir.glob("*.zst")), "verify": verified.stdout.strip(),
                  "verify_errors": verified.stderr.strip()[-500:], "rollup_errors": rolled.stderr.strip()[-500:]})
    return privacy, roll, proof


def panels_check(s: Stack, clickhouse_dir: Path) -> Check:
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=f"chdb://{clickhouse_dir}")
    queries = panel_queries(s.catalog)
    empty = []
    for uid, title, kind, expr in queries:
        if kind == CLICKHOUSE:
            sql = expr.replace("$__timeFilter(ts)", "ts >= now() - INTERVAL 1 DAY").replace("$__timeInterval(ts)", "toStartOfMinute(ts)")
            if not client.query(sql).result_rows:
                empty.append(f"{uid} / {title}")
        elif not s.prometheus.query(expr):
            empty.append(f"{uid} / {title}: {expr}")
    return Check("7. every dashboard panel query returns data after the run", not empty,
                 {"queries": len(queries), "with_data": len(queries) - len(empty), "empty": empty})


def rate_limit_burst(s: Stack, writes: int = 300) -> int:
    """One tenant writes past core's per-tenant limit: RATE_LIMIT answers, and the rate-limit panels have data."""
    limited = 0
    with httpx.Client(timeout=5) as client:
        for _ in range(writes):
            r = client.post(f"{s.url['core']}/v1/items", json={"kind": "burst", "size": 1}, headers={"x-tenant": s.catalog.tenants[-1]})
            limited += r.status_code == 429
    return limited


def capacity(s: Stack, tokens: dict, seconds: int, report: Path, echo, max_steps: int = 4) -> dict:
    """Steady load at 30k req/min, then up (x1.5) while the SLO holds or down (x2/3) until it does."""
    steady = scenarios(s.catalog)["steady"]
    steps, rate = [], float(CAPACITY_RATE)
    for _ in range(max_steps):
        figures = run_load(s, steady, tokens, rate, seconds, report, echo)
        misses = slo_misses(figures, rate)
        held = not misses
        steps.append({"rate": rate, "held": held, "broke_on": misses}
                     | {k: v for k, v in figures.items() if k not in ("locust", "pages_during_run")})
        echo(f"  {rate:.0f} req/min: achieved {figures['achieved_req_per_min']}, gateway p99 {figures['gateway_p99_ms']} ms, "
             f"errors {figures['gateway_error_ratio']}: {'held' if held else 'broke on ' + '; '.join(misses)}")
        if any(st["held"] for st in steps) and any(not st["held"] for st in steps):
            break
        rate = round(rate * 1.5) if held else round(rate * 2 / 3)
    holding = [st["rate"] for st in steps if st["held"]]
    breaking = [st["rate"] for st in steps if not st["held"]]
    return {"steps": steps, f"held_at_{CAPACITY_RATE}": steps[0]["held"],
            "highest_rate_held": max(holding) if holding else None,
            "lowest_rate_broken": min(breaking) if breaking else None}


def _preflight(s: Stack, data: Path, alerts: set[str] | None = None) -> None:
    """The stack is up, and none of the alerts to prove (default: every page alert) is already active."""
    down = [r["part"] for r in stack.status(s.catalog, s.catalog_path, data) if r["health"] != "ok" and r["url"]]
    if down:
        raise stack.StackError(f"the stack is not up ({', '.join(down)}); run `vigia up` first")
    active = {r["metric"]["alertname"] for r in s.prometheus.query('ALERTS{severity="page"}')}
    residue = sorted(active if alerts is None else active & alerts)
    if residue:
        raise stack.StackError(f"page alerts already active ({', '.join(residue)}): an earlier fault is still inside their "
                               f"windows; prove on a fresh stack: vigia up --fresh --data {data}")


def prove(catalog: Catalog, catalog_path: Path, data: Path, rate: float, seconds: int, fault_seconds: int,
          report: Path, echo=print, quick: bool = False) -> list[Check]:
    """The full proof: seed 004's seven checks, and (unless quick) chaos-light and the capacity steps."""
    data, report = data.resolve(), report.resolve()
    report.mkdir(parents=True, exist_ok=True)
    s = Stack(catalog, catalog_path.resolve(), data)
    _preflight(s, data)
    tokens = s.tokens()
    t0 = time.time()
    chosen = scenarios(catalog)
    checks = [steady_check(s, tokens, rate, seconds, report, echo)]
    quiet = {"steady": checks[0].figures["pages_during_run"]}
    extra: list[Check] = []
    if not quick:
        extra.append(chaos_check(s, tokens, rate, max(seconds // 2, 30), report, echo))
        quiet["chaos-light"] = extra[-1].figures["pages_during_run"]
    checks.append(ws_check(s, tokens, rate, 20 if quick else 30, report, echo))
    groups = [[chosen["errors"], chosen["slow"], chosen["jwks"]], [chosen["burst"], chosen["down"]]]
    faults = run_faults(s, groups, tokens, rate, fault_seconds, report, echo)
    checks.append(backpressure_check(faults))
    rate_limit_burst(s)
    privacy, roll, proof = rollup_checks(s, report, echo)
    checks += [privacy, roll, alerts_check(s, faults, t0, quiet, chosen)]
    if not quick:
        echo(f"capacity: {CAPACITY_RATE} req/min, then up or down to where the SLO breaks")
        steps = capacity(s, tokens, 45, report, echo)
        extra.append(Check(f"steady load at {CAPACITY_RATE} req/min (6x the blueprint), and where the SLO breaks",
                           steps[f"held_at_{CAPACITY_RATE}"], steps))
    time.sleep(SETTLE_S)
    checks.append(panels_check(s, proof / "clickhouse"))
    from loadtests.report import write_report
    write_report(report, checks + extra, s.prometheus, catalog, t0, time.time())
    return checks + extra


def prove_scenarios(catalog: Catalog, catalog_path: Path, data: Path, names: list[str], rate: float, seconds: int,
                    fault_seconds: int, report: Path, echo=print) -> list[Check]:
    """Run only the named scenarios, one after the other, one check each."""
    known = scenarios(catalog)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise stack.StackError(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(known)}")
    data, report = data.resolve(), report.resolve()
    report.mkdir(parents=True, exist_ok=True)
    s = Stack(catalog, catalog_path.resolve(), data)
    _preflight(s, data, {alert for n in names for alert in known[n].fires})
    tokens, t0, checks = s.tokens(), time.time(), []
    for name in names:
        sc = known[name]
        if name == "steady":
            checks.append(steady_check(s, tokens, rate, seconds, report, echo))
        elif name == "chaos-light":
            checks.append(chaos_check(s, tokens, rate, seconds, report, echo))
        elif name == "ws-kill":
            checks.append(ws_check(s, tokens, rate, seconds, report, echo))
        else:
            faults = run_faults(s, [[sc]], tokens, rate, fault_seconds, report, echo)
            figures = {"alerts": faults["alerts"], "missing": faults["missing"]} | (
                {"probe": faults["probe"], "gateway_backpressure_rise": faults["gateway_backpressure_rise"]} if "probe" in faults else {})
            passed = not faults["missing"] and (name != "burst" or backpressure_check(faults).passed)
            checks.append(Check(f"{name}: {sc.description}; fires {', '.join(sc.fires)} and delivers to the sink", passed, figures))
    from loadtests.report import write_report
    write_report(report, checks, s.prometheus, catalog, t0, time.time())
    return checks
