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


def write_report(out: Path, checks, prom, catalog, start: float, end: float) -> None:
    for filename, title, unit in PLOTS:
        panel = _panel(catalog, title)
        series = []
        for query in panel.queries:
            for result in prom.series(query.expr, start, end):
                labels = result["metric"]
                label = query.legend
                for key, value in labels.items():
                    label = label.replace("{{" + key + "}}", value)
                series.append((label or query.expr[:40], result["values"]))
        _plot(out / filename, title, unit, series)
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
    fig.savefig(out / "alerts.png", dpi=110)
    plt.close(fig)
    doc = {"started": start, "ended": end, "passed": all(c.passed for c in checks),
           "checks": [{"name": c.name, "passed": c.passed, "figures": c.figures} for c in checks]}
    (out / "report.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    lines = ["# vigia proof report", "",
             f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M:%S} to "
             f"{datetime.fromtimestamp(end, timezone.utc):%H:%M:%S} UTC: "
             f"{sum(c.passed for c in checks)}/{len(checks)} checks passed", ""]
    for c in checks:
        lines += [f"## {'PASS' if c.passed else 'FAIL'} {c.name}", "", "```json", json.dumps(c.figures, indent=2, default=str),
                  "```", ""]
    lines += ["![latency](latency.png)", "![errors](errors.png)", "![backpressure](backpressure.png)", "![alerts](alerts.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
