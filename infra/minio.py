"""The object store's lifecycle, from the catalog's retention: MinIO / S3 expire old days themselves.

The same policy the rollup enforces on a local store (`jobs.lifecycle.retention_days`): logs,
audit and their quarantine objects; `state/` and `keys/` have no rule and never expire.
"""

from __future__ import annotations

from jobs.lifecycle import retention_days
from vigia import conventions as names
from vigia.model import Catalog


def render(catalog: Catalog, profile: str) -> dict[str, object]:
    return {names.MINIO_LIFECYCLE: lifecycle(catalog)}


def lifecycle(catalog: Catalog) -> dict:
    """S3 lifecycle configuration (the JSON `mc ilm import` and PutBucketLifecycleConfiguration take)."""
    return {"Rules": [
        {"ID": f"{prefix.replace('/', '-')}-retention", "Status": "Enabled", "Filter": {"Prefix": f"{prefix}/"},
         "Expiration": {"Days": days}}
        for prefix, days in retention_days(catalog).items()
    ]}
