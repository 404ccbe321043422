"""`vigia bench overhead|logger|trails` (and `bench rollup`, added by jobs): a JSON line each."""

from __future__ import annotations

import json
from pathlib import Path

import typer

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: ratios against a baseline measured in the same run.")


def _catalog(path: Path):
    from vigia.cli import load_catalog
    return load_catalog(path)


def _emit(result: dict) -> None:
    typer.echo(json.dumps(result, separators=(",", ":")))


@bench_app.command("overhead")
def overhead(rounds: int = typer.Option(6, help="Rounds, each a bare and an instrumented server in alternating order."),
             seconds: float = typer.Option(4.0, help="Load duration per round."),
             catalog: Path = typer.Option(Path("stack.yaml"), "--catalog")) -> None:
    """req/s of a trivial endpoint with the full middleware vs the same app bare."""
    from collectors.bench import bench_overhead
    _emit(bench_overhead(_catalog(catalog), rounds=rounds, seconds=seconds, progress=typer.echo))


@bench_app.command("logger")
def logger(records: int = typer.Option(100_000), catalog: Path = typer.Option(Path("stack.yaml"), "--catalog")) -> None:
    """Server-blind log records/s vs stdlib logging with a JSON formatter."""
    from collectors.bench import bench_logger
    _emit(bench_logger(_catalog(catalog), records=records, progress=typer.echo))


@bench_app.command("trails")
def trails(records: int = typer.Option(20_000), catalog: Path = typer.Option(Path("stack.yaml"), "--catalog")) -> None:
    """Chained trail records/s, unsigned and signed, and verification/s."""
    from collectors.bench import bench_trails
    _emit(bench_trails(_catalog(catalog), records=records, progress=typer.echo))


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
