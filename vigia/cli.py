"""The `vigia` command line: one entry point for render, check, and every job.

Errors are one line on stderr; `--verbose` shows the trace. A bad catalog or command line exits 2.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

import typer
from click import Abort as ClickAbort
from click import ClickException

from vigia import catalog as catalog_mod
from vigia.render import PROFILES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="vigia: observability stack as code. One catalog, every config, proven.")
CatalogOption = typer.Option(Path("stack.yaml"), "--catalog", help="Path of the catalog file.")
_state = {"verbose": False}

# Packages that add their own commands through `register(app)` in `<package>/commands.py`.
COMMAND_PACKAGES = ("collectors", "services", "jobs", "loadtests")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the full trace on errors.")) -> None:
    _state["verbose"] = verbose


def load_catalog(path: Path):
    """Load the catalog or exit 2 with one line per problem."""
    try:
        return catalog_mod.load(path)
    except catalog_mod.CatalogError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(2) from None


@app.command()
def render(
    profile: str = typer.Option("local", help=f"One of: {', '.join(PROFILES)}."),
    out: Path = typer.Option(Path("build/local"), help="Folder to write the rendered tree into."),
    catalog: Path = CatalogOption,
) -> None:
    """Render every config of one profile from the catalog (deterministic bytes)."""
    from vigia.render import render_all
    from vigia.writer import write_tree

    if profile not in PROFILES:
        typer.echo(f"error: unknown profile {profile!r}; choose one of {', '.join(PROFILES)}", err=True)
        raise typer.Exit(2)
    model = load_catalog(catalog)
    written = write_tree(out, render_all(model, profile), source=catalog.name)
    typer.echo(f"rendered {len(written)} files for profile {profile} into {out}")


@app.command()
def check(
    out: Path = typer.Option(Path("build/local"), help="A folder written by `vigia render`."),
    catalog: Path = CatalogOption,
) -> None:
    """Check a rendered tree with promtool, amtool and docker-compose, and the catalog's cross-checks."""
    from vigia.check import run_checks

    load_catalog(catalog)
    typer.echo(f"ok   catalog {catalog}")
    outcomes = run_checks(out)
    for outcome in outcomes:
        typer.echo(str(outcome), err=not outcome.ok)
    failed = [o for o in outcomes if not o.ok]
    typer.echo(f"{len(outcomes) - len(failed)}/{len(outcomes)} checks passed")
    if failed:
        raise typer.Exit(1)


def _register_packages() -> None:
    for package in COMMAND_PACKAGES:
        try:
            module = importlib.import_module(f"{package}.commands")
        except ModuleNotFoundError as exc:
            if exc.name in (package, f"{package}.commands"):
                continue
            raise
        module.register(app)


_register_packages()


def run() -> None:
    """Console entry point: one clear line per error, the trace only with --verbose."""
    # typer >= 0.20 ships its own copy of click: usage errors are typer.TyperException then.
    usage_errors = tuple({getattr(typer, "TyperException", ClickException), ClickException})
    aborts = tuple({getattr(typer, "Abort", ClickAbort), ClickAbort, KeyboardInterrupt})
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except usage_errors as exc:  # one line, like every other error; exit 2 for a bad command line
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except aborts:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI's single error boundary
        if _state["verbose"] or "--verbose" in sys.argv or "-v" in sys.argv:
            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        sys.exit(1)
