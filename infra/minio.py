"""The object store's lifecycle, from the catalog's retention: MinIO / S3 expire old days themselves."""

from __future__ import annotations

from vigia import conventions as names
from vigia.model import Catalog


def render(catalog: Catalog, profile: str) -> dict[str, object]:
    return {names.MINIO_LIFECYCLE: lifecycle(catalog)}


def lifecycle(catalog: Catalog) -> dict:
    """S3 lifecycle configuration (the JSON `mc ilm import` and PutBucketLifecycleConfiguration take)."""
    s, r = catalog.storage, catalog.retention
    return {"Rules": [
        {"ID": "logs-retention", "Status": "Enabled", "Filter": {"Prefix": f"{s.logs_prefix}/"},
         "Expiration": {"Days": r.logs_days}},
        {"ID": "audit-retention", "Status": "Enabled", "Filter": {"Prefix": f"{s.audit_prefix}/"},
         "Expiration": {"Days": r.audit_days.default}},
    ]}
