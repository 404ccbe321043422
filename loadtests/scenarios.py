"""The proof scenarios as data: which Locust users run, which runtime faults are induced, and
which alerts must then fire (and reach the alert sink) or stay quiet.

A scenario is judged from Prometheus and Alertmanager's deliveries, never from Locust alone.
Every page-severity alert of the catalog must be fired by some scenario: `uncovered_pages`
names the ones no scenario induces, and the prover fails on them rather than skipping them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vigia import conventions as names
from vigia.model import Catalog

# The fault magnitudes the scenarios induce.
BURST_QUOTA = 2.0  # policy's capacity in tokens/s during a burst: far below the traffic
ERROR_RATIO = 0.2  # share of requests answered 500 by the errors scenario (66x the 0.3 % budget)
SLOW_RATIO = 0.1  # share of requests delayed 400-600 ms by the slow scenario (p99 > 300 ms within minutes)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    users: tuple[str, ...] = ("GatewayUser",)      # Locust user classes in loadtests/locustfile.py
    flags: dict[str, dict] = field(default_factory=dict)  # component -> runtime flags while it runs
    fires: tuple[str, ...] = ()                   # alerts it must fire and deliver
    stops: str | None = None                      # a component it stops (and starts again after)


def scenarios(catalog: Catalog) -> dict[str, Scenario]:
    everyone = {c.name: {"chaos": True} for c in catalog.components}
    return {s.name: s for s in (
        Scenario("steady", "a realistic mix across gateway routes, tenants, MCP tools and WebSocket sessions",
                 users=("GatewayUser", "SessionUser")),
        Scenario("chaos-light", "1 % of requests delayed 120-300 ms on every service: the SLOs hold, nothing pages",
                 flags=everyone),
        Scenario("burst", f"tool calls beyond policy's capacity (lowered to {BURST_QUOTA:g} tokens/s): BACKPRESSURE "
                          "with retry_after_ms", users=("GatewayUser", "BurstUser"),
                 flags={"policy": {"quota_override": BURST_QUOTA}}, fires=("OfficeBackpressureBurn",)),
        Scenario("errors", f"{ERROR_RATIO:.0%} of gateway and core requests answered 500",
                 flags={"gateway": {"inject_5xx": ERROR_RATIO}, "core": {"inject_5xx": ERROR_RATIO}},
                 fires=("Gateway5xxRateHigh", "Core5xxRateHigh", names.SLO_BURN_ALERT)),
        Scenario("slow", f"{SLOW_RATIO:.0%} of gateway and core requests delayed 400-600 ms",
                 flags={"gateway": {"inject_latency": SLOW_RATIO}, "core": {"inject_latency": SLOW_RATIO}},
                 fires=("GatewayLatencyP99High", "CoreLatencyP99High")),
        Scenario("jwks", "every JWKS refresh of the gateway fails", flags={"gateway": {"jwks_fail": True}},
                 fires=("JwksRefreshFailing",)),
        Scenario("ws-kill", "WebSocket sessions dropped without a close frame, then resumed with last_event_id",
                 users=("GatewayUser", "ReconnectingSessionUser")),
        Scenario("down", "core is stopped", fires=("ComponentDown",), stops="core"),
    )}


def reset_flags(scenario: Scenario) -> dict[str, dict]:
    """The flag values that end a scenario's faults."""
    off = {"chaos": False, "inject_5xx": 0.0, "inject_latency": 0.0, "jwks_fail": False, "quota_override": None}
    return {component: {flag: off[flag] for flag in flags} for component, flags in scenario.flags.items()}


def uncovered_pages(catalog: Catalog, chosen: dict[str, Scenario]) -> list[str]:
    """Page-severity alerts of the catalog that none of the scenarios fires."""
    fired = {alert for s in chosen.values() for alert in s.fires}
    pages = {a.name for a in catalog.alerts if a.severity == "page"}
    if any(t.severity == "page" for t in catalog.burn_rate_tiers) and catalog.slos:
        pages.add(names.SLO_BURN_ALERT)
    return sorted(pages - fired)
