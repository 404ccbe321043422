"""`vigia rollup`, `vigia verify` and `vigia bench rollup`."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

CatalogOption = typer.Option(Path("stack.yaml"), "--catalog")


def _client(dsn: str):
    import clickhouse_connect
    if dsn.startswith("chdb://"):
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=dsn)


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date like 2026-11-21") from None


def _audit_days(catalog, days: int | None) -> int | None:
    try:
        catalog.retention.audit_days.policy(days)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--audit-days") from None
    return days


def _trusted(public_keys: list[Path], key_file: Path | None) -> dict[str, tuple[bytes, str]]:
    """The keys verify trusts: --public-key files, VIGIA_TRUSTED_KEYS (paths separated by the OS path
    separator), and the public half of --key-file. Never a key read from the store."""
    from jobs.manifest import trusted_keys

    files = list(public_keys) + [Path(p) for p in os.environ.get("VIGIA_TRUSTED_KEYS", "").split(os.pathsep) if p]
    try:
        keys = trusted_keys(files, key_file)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--public-key") from None
    if not keys:
        raise typer.BadParameter("no trusted key: pass --public-key FILE (the rollup writes <key file>.pub), "
                                 "set VIGIA_TRUSTED_KEYS, or pass --key-file; keys/ in the store is not trusted",
                                 param_hint="--public-key")
    return keys


AuditDaysOption = typer.Option(None, "--audit-days", help="Audit retention in days, within the catalog's "
                               "retention.audit_days min..max (default: its default).")


def register(app: typer.Typer) -> None:
    @app.command()
    def rollup(
        spool: Path = typer.Option(Path("var/spool"), help="Folder the services write logs/ and audit/ under."),
        store: str = typer.Option("file://var/store", help="file:///path or s3://bucket/optional-prefix."),
        clickhouse: str = typer.Option("chdb://var/clickhouse", help="clickhouse-connect DSN (chdb:///path or http://...)."),
        compression: str = typer.Option("zstd", help="zstd or gzip."),
        key_file: Path = typer.Option(Path(os.environ.get("VIGIA_ROLLUP_KEY_FILE", "var/keys/rollup.key")),
                                      help="Ed25519 key that signs manifests (created on first use, 0600; "
                                           "its public half is written to <key file>.pub)."),
        include_today: bool = typer.Option(False, help="Also ship a snapshot of open files (today's); they stay in the spool."),
        audit_days: int = AuditDaysOption,
        every: int = typer.Option(0, help="Run again every N seconds (0: once)."),
        catalog: Path = CatalogOption,
    ) -> None:
        """Ship closed NDJSON logs and trails to the object store and ClickHouse, verifiably."""
        import time

        while every:
            _rollup_once(spool, store, clickhouse, compression, key_file, include_today, audit_days, catalog)
            time.sleep(every)
        _rollup_once(spool, store, clickhouse, compression, key_file, include_today, audit_days, catalog)

    def _rollup_once(spool, store, clickhouse, compression, key_file, include_today, audit_days, catalog) -> None:
        import time

        from jobs import manifest, rollup as job
        from jobs.store import open_store
        from vigia.cli import load_catalog

        model = load_catalog(catalog)
        days = _audit_days(model, audit_days)
        target = open_store(store)
        files, _ = job.scan_spool(spool, time.time(), include_today)
        total = sum(f.path.stat().st_size for f in files)
        console = Console(stderr=True)
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(f"shipping {len(files)} files", total=total or 1)
            summary = job.run(model, spool, target, _client(clickhouse), manifest.load_or_create_key(key_file),
                              compression, include_today, progress=lambda n: bar.advance(task, n), audit_days=days)
        table = Table(title=f"rollup into {target.url}", show_header=False)
        for name, value in (("files", summary.files), ("lines", f"{summary.lines:,}"),
                            ("bytes in", f"{summary.bytes_in:,}"), ("bytes stored", f"{summary.bytes_stored:,}"),
                            ("quarantined", summary.quarantined), ("manifests", summary.manifests),
                            ("days", ", ".join(summary.days) or "none"),
                            ("ignored", _some(summary.ignored, "not NDJSON spool files")),
                            ("left in spool", _some(summary.left, "")), ("expired", summary.expired),
                            ("time", f"{summary.seconds:.2f} s")):
            table.add_row(name, str(value))
        console.print(table)
        typer.echo(json.dumps({"rollup": summary.as_dict()}, separators=(",", ":")))

    @app.command()
    def verify(
        store: str = typer.Option("file://var/store", help="file:///path (a downloaded folder works) or s3://bucket."),
        date_from: str = typer.Option(None, "--date", help="First day (default: yesterday, UTC)."),
        date_to: str = typer.Option(None, "--to", help="Last day (default: --date)."),
        clickhouse: str = typer.Option(None, help="Also compare line counts with this ClickHouse DSN."),
        record: str = typer.Option(None, help="Print an inclusion proof for this trail record id."),
        bundle: Path = typer.Option(None, help="Verify an audit bundle from `vigia export-audit` offline."),
        public_key: list[Path] = typer.Option([], "--public-key", help="A trusted public key file (repeatable); "
                                              "also VIGIA_TRUSTED_KEYS."),
        key_file: Path = typer.Option(None, help="Trust the public half of this rollup key file."),
        audit_days: int = AuditDaysOption,
        catalog: Path = CatalogOption,
    ) -> None:
        """Check manifests, signatures, checksums, Merkle checkpoints and ClickHouse counts; exit 1 on any finding."""
        from jobs import verify as check
        from jobs.export import verify_bundle
        from jobs.store import open_store
        from vigia.cli import load_catalog

        model = load_catalog(catalog)
        days = _audit_days(model, audit_days)
        trusted = _trusted(public_key, key_file)
        keys = {kid: pair[0] for kid, pair in trusted.items()}
        if record:
            proof = check.inclusion(open_store(store), model, record, keys)
            typer.echo(json.dumps(proof, indent=2))
            raise typer.Exit(0 if proof["verified"] and proof["checkpoint_signed"] else 1)
        if bundle is not None:
            report, index = verify_bundle(bundle, model, keys, days)
            title = f"audit bundle {index['from']}..{index['to']}"
        else:
            start = _day(date_from) if date_from else (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
            end = _day(date_to) if date_to else start
            report = check.verify(open_store(store), model, start, end, keys, _client(clickhouse) if clickhouse else None,
                                  audit_days=days)
            title = f"{store} {start}..{end}"
        for finding in report.findings:
            typer.echo(f"FAIL {finding}", err=True)
        typer.echo(title)
        for kid, (_, source) in trusted.items():
            typer.echo(f"trusted key {kid} ({source}): {report.signers.get(kid, 0)} signatures verified")
        for line in report.lines():
            typer.echo(line)
        raise typer.Exit(0 if report.ok else 1)

    register_more(app)
    try:
        from collectors.commands import bench_app
    except ImportError:
        return

    @bench_app.command("rollup")
    def bench_rollup(megabytes: int = typer.Option(64, help="Size of the synthetic NDJSON day."),
                     rows: int = typer.Option(200_000, help="Rows for the ClickHouse load comparison."),
                     catalog: Path = CatalogOption) -> None:
        """Ship MB/s (zstd) vs a gzip-6 baseline; ClickHouse rows/s streamed vs parsed in Python."""
        from jobs.bench import bench_rollup as run_bench
        from vigia.cli import load_catalog
        typer.echo(json.dumps(run_bench(load_catalog(catalog), megabytes, rows, progress=typer.echo), separators=(",", ":")))


def _some(items: list[str], what: str) -> str:
    """A count and the first few names, for the summary table."""
    if not items:
        return "0"
    shown = "; ".join(items[:3]) + (f"; ... {len(items) - 3} more" if len(items) > 3 else "")
    return f"{len(items)}{' ' + what if what else ''}: {shown}"


def register_more(app: typer.Typer) -> None:
    """lifecycle, export-audit and release-private."""

    @app.command()
    def lifecycle(store: str = typer.Option("file://var/store"), today: str = typer.Option(None, help="Pretend today is this day."),
                  audit_days: int = AuditDaysOption, catalog: Path = CatalogOption) -> None:
        """Delete days past the catalog's retention from a local store (MinIO does it itself on S3; rollup runs this too)."""
        from jobs import lifecycle as job
        from jobs.store import open_store
        from vigia.cli import load_catalog

        model = load_catalog(catalog)
        days = _audit_days(model, audit_days)
        when = date.fromisoformat(_day(today)) if today else datetime.now(timezone.utc).date()
        removed = job.enforce(open_store(store), model, when, days)
        typer.echo(json.dumps({"lifecycle": {"deleted": len(removed)}}))

    @app.command("export-audit")
    def export_audit(store: str = typer.Option("file://var/store"), date_from: str = typer.Option(..., "--from"),
                     date_to: str = typer.Option(..., "--to"), out: Path = typer.Option(Path("audit-bundle.tar.gz")),
                     catalog: Path = CatalogOption) -> None:
        """A .tar.gz of trails, manifests, checkpoints and public keys for an external auditor."""
        from jobs.export import bundle
        from jobs.store import open_store
        from vigia.cli import load_catalog

        data = bundle(open_store(store), load_catalog(catalog), _day(date_from), _day(date_to))
        out.write_bytes(data)
        typer.echo(f"wrote {out} ({len(data):,} bytes); verify with: vigia verify --bundle {out}")

    @app.command("release-private")
    def release_private(day: str = typer.Option(..., help="Day to publish."), store: str = typer.Option("file://var/store"),
                        clickhouse: str = typer.Option("chdb://var/clickhouse"),
                        budget: float = typer.Option(None, min=0.0, help="Total epsilon the day's releases may spend "
                                                     "(default: the catalog's privacy.epsilon, one release per day). "
                                                     "The same day and query again re-serves the stored release, free."),
                        catalog: Path = CatalogOption) -> None:
        """Publish k-anonymous, discrete-Laplace-noised hourly aggregates as Parquet, within the day's privacy budget."""
        from jobs.privacy import BudgetExceeded, publish
        from jobs.store import open_store
        from vigia.cli import load_catalog

        try:
            record = publish(open_store(store), _client(clickhouse), load_catalog(catalog), _day(day), budget)
        except BudgetExceeded as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(json.dumps({"release": record}, separators=(",", ":")))
