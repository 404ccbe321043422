"""`vigia serve <component>`, `vigia sink` and `vigia token`: run the reference services."""

from __future__ import annotations

import os
from pathlib import Path

import typer

COMPONENTS = ("gateway", "policy", "core", "office")


def _admin_token(token_file: Path | None) -> str | None:
    if token_file is not None:
        return token_file.read_text().strip()
    return os.environ.get("VIGIA_ADMIN_TOKEN")


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        component: str = typer.Argument(..., help=f"One of: {', '.join(COMPONENTS)}."),
        port: int = typer.Option(None, help="Port to listen on (default: the catalog's)."),
        host: str = typer.Option("127.0.0.1"),
        data_dir: Path = typer.Option(Path("var/spool"), help="Logs and trails are written under it."),
        node: str = typer.Option("n1", help="Node name in log and trail file names."),
        peer: list[str] = typer.Option([], help="Override a peer URL, e.g. --peer core=http://127.0.0.1:8083."),
        admin_token_file: Path = typer.Option(None, help="File with the admin token (else VIGIA_ADMIN_TOKEN)."),
        jwks_refresh_s: float = typer.Option(10.0, help="Gateway: seconds between JWKS refreshes."),
        webhook_base: str = typer.Option(None, help="Gateway: base URL webhooks are delivered to."),
        catalog: Path = typer.Option(Path("stack.yaml"), "--catalog"),
    ) -> None:
        """Run one reference service (FastAPI + uvicorn), instrumented by collectors."""
        import uvicorn

        from services import core, gateway, office, policy
        from vigia.cli import load_catalog

        if component not in COMPONENTS:
            raise typer.BadParameter(f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}")
        model = load_catalog(catalog)
        peers = dict(p.split("=", 1) for p in peer)
        token = _admin_token(admin_token_file)
        factories = {
            "policy": lambda: policy.create_app(model, data_dir, node, token),
            "core": lambda: core.create_app(model, data_dir, node, token),
            "office": lambda: office.create_app(model, data_dir, node, token, peers),
            "gateway": lambda: gateway.create_app(model, data_dir, node, token, peers, webhook_base, jwks_refresh_s),
        }
        listen = port or model.component(component).port
        uvicorn.run(factories[component](), host=host, port=listen, log_level="warning", access_log=False)

    @app.command()
    def sink(port: int = typer.Option(9099), host: str = typer.Option("127.0.0.1"),
             out: Path = typer.Option(Path("var/alerts"), help="Folder for alerts.ndjson and webhooks.ndjson.")) -> None:
        """Record Alertmanager notifications and webhook deliveries as NDJSON."""
        import uvicorn

        from services.sink import create_sink
        uvicorn.run(create_sink(out), host=host, port=port, log_level="warning", access_log=False)
