"""Render every artifact of one profile: a pure function from the catalog to `{path: data}`."""

from __future__ import annotations

from vigia import conventions as names
from vigia.model import Catalog

PROFILES = ("local", "prod", "cluster")
# The committed prod render, and where the root docker-compose.yml finds it.
GOLDEN_DIR = "infra/observability"


def render_all(catalog: Catalog, profile: str) -> dict[str, object]:
    """Each renderer is `render(catalog, profile) -> {relative path: data}`; paths never collide."""
    from dashboards import grafana
    from infra import alertmanager, clickhouse, compose, minio, otel, prometheus

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    files: dict[str, object] = {}
    for renderer in (prometheus, alertmanager, otel, grafana, clickhouse, minio, compose):
        for path, data in renderer.render(catalog, profile).items():
            if path in files:
                raise RuntimeError(f"two renderers produce {path}")
            files[path] = data
    return files


def render_root_files(catalog: Catalog) -> dict[str, object]:
    """The repository's own docker-compose.yml (prod, building vigia from the repo) and .env.example."""
    from infra import compose

    return {names.COMPOSE_FILE: compose.compose(catalog, "prod", root=f"./{GOLDEN_DIR}", build="."),
            ".env.example": compose.env_example()}
