"""Retention from the catalog, enforced on the local store the way MinIO's lifecycle does on S3.

One policy: logs (and their quarantine) are kept `retention.logs_days`; audit trails (and their
quarantine) one value within `retention.audit_days` min..max, `default` unless chosen with
`--audit-days`. The MinIO rules, the local store and verify's idea of "expired" all come from
`retention_days`. A whole day folder expires at once; `state/` (the chains' heads and the Merkle
log's frontier) and `keys/` never expire, so expiry never restarts a chain or the log.
"""

from __future__ import annotations

from datetime import date, timedelta

from jobs import manifest as mf
from vigia.model import Catalog

QUARANTINE = "quarantine"


def retention_days(catalog: Catalog, audit: int | None = None) -> dict[str, int]:
    """Key prefix of day folders -> days they are kept."""
    s, logs, trails = catalog.storage, catalog.retention.logs_days, catalog.retention.audit_days.policy(audit)
    return {s.logs_prefix: logs, s.audit_prefix: trails,
            f"{QUARANTINE}/logs": logs, f"{QUARANTINE}/audit": trails}


def expired(catalog: Catalog, prefix: str, day: str, today: date, audit: int | None = None) -> bool:
    """Has `day` under `prefix` passed its retention, so lifecycle may have removed it?"""
    return day < (today - timedelta(days=retention_days(catalog, audit)[prefix])).isoformat()


def expired_keys(store, catalog: Catalog, today: date, audit: int | None = None) -> list[str]:
    out = []
    for prefix in retention_days(catalog, audit):
        for key in store.list(f"{prefix}/"):
            found = mf.day_file(prefix, key)
            if found and expired(catalog, prefix, found[0], today, audit):
                out.append(key)
    return out


def enforce(store, catalog: Catalog, today: date, audit: int | None = None) -> list[str]:
    keys = expired_keys(store, catalog, today, audit)
    for key in keys:
        store.delete(key)
    return keys
