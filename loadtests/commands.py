"""`vigia up`, `vigia down`, `vigia status`, `vigia scan` and `vigia prove`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

CatalogOption = typer.Option(Path("stack.yaml"), "--catalog")
DataOption = typer.Option(Path("var/stack"), "--data", help="Folder holding the embedded stack's state.")


def register(app: typer.Typer) -> None:
    register_prove(app)

    @app.command()
    def up(data: Path = DataOption, catalog: Path = CatalogOption,
           rollup_every: int = typer.Option(3600, help="Seconds between rollup runs."),
           fresh: bool = typer.Option(False, help="Stop the stack and empty its data folder first.")) -> None:
        """Start the embedded stack (no Docker): Prometheus, Alertmanager, services, alert sink, rollup."""
        from loadtests import stack
        from vigia.cli import load_catalog

        model = load_catalog(catalog)
        try:
            parts = stack.up(model, catalog, data, echo=typer.echo, rollup_every=rollup_every, fresh=fresh)
        except stack.StackError as exc:
            raise typer.BadParameter(str(exc)) from None
        typer.echo("\n" + "\n".join(f"  {p.name:<13} {p.url}" for p in parts if p.port))
        typer.echo(f"\nstate under {data}; stop with: vigia down --data {data}")

    @app.command()
    def down(data: Path = DataOption, catalog: Path = CatalogOption) -> None:
        """Stop exactly what `vigia up` started."""
        from loadtests import stack
        from vigia.cli import load_catalog

        count = stack.down(load_catalog(catalog), catalog, data, echo=typer.echo)
        typer.echo(f"stopped {count} parts")

    @app.command()
    def status(data: Path = DataOption, catalog: Path = CatalogOption) -> None:
        """Parts of the embedded stack: pid, URL, health."""
        from loadtests import stack
        from vigia.cli import load_catalog

        table = Table("part", "pid", "url", "health")
        rows = stack.status(load_catalog(catalog), catalog, data)
        for row in rows:
            table.add_row(row["part"], str(row["pid"] or "-"), row["url"], row["health"])
        Console().print(table)
        raise typer.Exit(0 if all(r["health"] == "ok" for r in rows) else 1)

    @app.command()
    def scan(data: Path = DataOption, catalog: Path = CatalogOption,
             clickhouse: str = typer.Option(None, help="Also scan this ClickHouse (default: the stack's chDB)."),
             metrics: list[str] = typer.Option([], help="Also scan these /_metrics URLs.")) -> None:
        """Privacy scan: forbidden fields and leaking values in everything written. Exit 1 on any finding."""
        from loadtests.scan import scan_all
        from vigia.cli import load_catalog

        result = scan_all(load_catalog(catalog), data, clickhouse, metrics)
        for finding in result["findings"][:50]:
            typer.echo(f"FAIL {finding}", err=True)
        typer.echo(json.dumps({"scan": {k: v for k, v in result.items() if k != "findings"} | {"findings": len(result["findings"])}}))
        raise typer.Exit(1 if result["findings"] else 0)


def register_prove(app: typer.Typer) -> None:
    @app.command()
    def prove(data: Path = DataOption, catalog: Path = CatalogOption,
              scenario: list[str] = typer.Option([], help="Run only these scenarios (steady, chaos-light, burst, errors, "
                                                         "slow, jwks, ws-kill, down), one check each."),
              rate: float = typer.Option(5000, help="Steady load, requests per minute."),
              duration: int = typer.Option(120, help="Seconds of steady load."),
              fault_seconds: int = typer.Option(300, help="Longest wait for the induced alerts."),
              quick: bool = typer.Option(False, help="The bounded proof CI runs: 45 s steady, no chaos-light or capacity steps."),
              report: Path = typer.Option(Path("reports/latest"), help="Folder for report.json, report.md and PNGs.")) -> None:
        """Prove seed 004's definition of done (or the named scenarios) against the running embedded stack."""
        from loadtests import prove as job
        from loadtests.stack import StackError
        from vigia.cli import load_catalog

        model = load_catalog(catalog)
        if quick:
            duration = 45
        try:
            if scenario:
                checks = job.prove_scenarios(model, catalog, data, scenario, rate, duration, fault_seconds, report, echo=typer.echo)
            else:
                checks = job.prove(model, catalog, data, rate, duration, fault_seconds, report, echo=typer.echo, quick=quick)
        except StackError as exc:
            raise typer.BadParameter(str(exc)) from None
        for check in checks:
            typer.echo(f"{'PASS' if check.passed else 'FAIL'} {check.name}")
        typer.echo(f"report: {report / 'report.md'}")
        raise typer.Exit(0 if all(c.passed for c in checks) else 1)
