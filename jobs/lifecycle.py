"""Retention from the catalog, enforced on the local store the way MinIO's lifecycle does on S3.

Logs are kept `retention.logs_days`, audit `retention.audit_days.default` (within min..max).
A whole day folder expires at once; `vigia verify` accepts a chain whose older links expired.
"""

from __future__ import annotations

from datetime import date, timedelta

from vigia.model import Catalog


def retention_days(catalog: Catalog) -> dict[str, int]:
    return {catalog.storage.logs_prefix: catalog.retention.logs_days,
            catalog.storage.audit_prefix: catalog.retention.audit_days.default}


def expired_keys(store, catalog: Catalog, today: date) -> list[str]:
    out = []
    for prefix, days in retention_days(catalog).items():
        cutoff = (today - timedelta(days=days)).isoformat()
        for key in store.list(f"{prefix}/"):
            parts = key.split("/")
            if len(parts) >= 5 and "-".join(parts[1:4]) < cutoff:
                out.append(key)
    return out


def enforce(store, catalog: Catalog, today: date) -> list[str]:
    keys = expired_keys(store, catalog, today)
    for key in keys:
        store.delete(key)
    return keys
