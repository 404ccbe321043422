"""Render every artifact of one profile: a pure function from the catalog to `{path: data}`."""

from __future__ import annotations

from vigia.model import Catalog

PROFILES = ("local", "prod", "cluster")


def render_all(catalog: Catalog, profile: str) -> dict[str, object]:
    """Each renderer is `render(catalog, profile) -> {relative path: data}`; paths never collide."""
    from dashboards import grafana
    from infra import alertmanager, clickhouse, compose, otel, prometheus

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    files: dict[str, object] = {}
    for renderer in (prometheus, alertmanager, otel, grafana, clickhouse, compose):
        for path, data in renderer.render(catalog, profile).items():
            if path in files:
                raise RuntimeError(f"two renderers produce {path}")
            files[path] = data
    return files
