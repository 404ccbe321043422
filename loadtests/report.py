"""The proof report: report.json (every check with its figures), report.md, and PNG plots drawn
from the same queries the Grafana dashboards use, so a reader sees the run without Grafana."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dashboards.panels import dashboards  # noqa: E402

PLOTS = (
    ("latency.png", "Latency p50/p95/p99 by domain", "s"),
    ("errors.png", "Error % by domain (5xx)", "ratio"),
    ("backpressure.png", "Policy decisions", "req/s"),
)


def _panel(catalog, title: str):
    return next(p for d in dashboards(catalog) for p in d.panels if p.title == title)


def _plot(path: Path, title: str, unit: str, series: list[tuple[str, list]]) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for label, values in series:
        if values:
            xs = [datetime.fromtimestamp(float(t), timezone.utc) for t, _ in values]
            ax.plot(xs, [float(v) for _, v in values], label=label, linewidth=1.4)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timeline(path: Path, prom, start: float, end: float) -> None:
    timeline = prom.series('ALERTS{alertstate="firing"}', start, end)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    names = sorted({r["metric"]["alertname"] for r in timeline})
    for i, name in enumerate(names):
        xs = [datetime.fromtimestamp(float(t), timezone.utc) for r in timeline if r["metric"]["alertname"] == name
              for t, _ in r["values"]]
        ax.scatter(xs, [i] * len(xs), s=6)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title("Alert timeline (firing)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _capacity(path: Path, steps: list[dict]) -> None:
    """p99 of gateway and core against the offered rate, with the achieved rate and the SLO line."""
    steps = sorted(steps, key=lambda st: st["rate"])
    rates = [st["rate"] for st in steps]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for component in ("gateway", "core"):
        ax.plot(rates, [st[f"{component}_p99_ms"] or 0 for st in steps], marker="o", label=f"{component} p99 (ms)")
    ax.axhline(300, color="red", linestyle="--", linewidth=1, label="SLO p99 300 ms")
    ax.set_xlabel("offered load (req/min)")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    achieved = ax.twinx()
    achieved.plot(rates, [st["achieved_req_per_min"] for st in steps], color="grey", linestyle=":", marker="x",
                  label="achieved req/min")
    achieved.set_ylabel("achieved req/min")
    lines = ax.get_legend_handles_labels()
    more = achieved.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    ax.set_title("Capacity: latency and throughput by offered load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _alert_table(checks) -> list[str]:
    """Markdown rows: every alert an induced fault fired, with its times to fire and to reach the sink."""
    rows = []
    for c in checks:
        for name, seen in (c.figures.get("alerts") or {}).items():
            rows.append(f"| {name} | {seen['scenario']} | {seen['fired_s']} | {seen['delivered_s']} |")
    if not rows:
        return []
    return ["## Time to detect", "", "Seconds from the fault (or the component's stop) until Prometheus fired the alert "
            "and until its notification reached the sink.", "",
            "| alert | scenario | fired after (s) | delivered after (s) |", "|---|---|---|---|", *rows, ""]


def write_report(out: Path, checks, prom, catalog, start: float, end: float) -> None:
    pictures = []
    for filename, title, unit in PLOTS:
        panel = _panel(catalog, title)
        series = []
        for query in panel.queries:
            for result in prom.series(query.expr, start, end):
                label = query.legend
                for key, value in result["metric"].items():
                    label = label.replace("{{" + key + "}}", value)
                series.append((label or query.expr[:40], result["values"]))
        _plot(out / filename, title, unit, series)
        pictures.append(filename)
    _timeline(out / "alerts.png", prom, start, end)
    pictures.append("alerts.png")
    for c in checks:
        if c.figures.get("steps"):
            _capacity(out / "capacity.png", c.figures["steps"])
            pictures.append("capacity.png")
    doc = {"started": start, "ended": end, "passed": all(c.passed for c in checks),
           "checks": [{"name": c.name, "passed": c.passed, "figures": c.figures} for c in checks]}
    (out / "report.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    lines = ["# vigia proof report", "",
             f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M:%S} to "
             f"{datetime.fromtimestamp(end, timezone.utc):%H:%M:%S} UTC: "
             f"{sum(c.passed for c in checks)}/{len(checks)} checks passed", ""]
    lines += [f"- {'PASS' if c.passed else 'FAIL'} {c.name}" for c in checks] + [""]
    lines += _alert_table(checks)
    lines += [f"![{name.removesuffix('.png')}]({name})" for name in pictures] + [""]
    for c in checks:
        lines += [f"## {'PASS' if c.passed else 'FAIL'} {c.name}", "", "```json", json.dumps(c.figures, indent=2, default=str),
                  "```", ""]
    (out / "report.md").write_text("\n".join(lines))
