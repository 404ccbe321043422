"""Object stores with one interface: a local folder (the embedded default) and S3 (MinIO in compose).

Both keep the identical key layout (`logs/yyyy/mm/dd/...`, `audit/...`), so a store downloaded
from S3 verifies offline like the live one. Every `put` is verified: S3 checks the SHA-256 the
client sends (`ChecksumSHA256`) and we read the metadata back; the local store re-reads and hashes.
Only S3's "no such key" reads as absent (`exists` False, `get` KeyError); any other S3 error is a
StoreError naming the key, so an outage never looks like an empty store.

Environment (S3): AWS_ENDPOINT_URL or VIGIA_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse


class StoreError(RuntimeError):
    """An object could not be written or read back intact."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"key {key!r} escapes the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if sha256_hex(path.read_bytes()) != sha256_hex(data):
            raise StoreError(f"{key}: read-back checksum differs")

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        folder = base if base.is_dir() else base.parent
        if not folder.exists():
            return []
        # Dotfiles too: verify must see everything the store holds (and names a put's leftover temp file).
        keys = (p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", client=None):
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        endpoint = os.environ.get("VIGIA_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = client or boto3.client("s3", endpoint_url=endpoint,
                                             region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data).digest()
        checksum = base64.b64encode(digest).decode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumSHA256=checksum,
                                   Metadata={"sha256": digest.hex()})
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except Exception as exc:  # noqa: BLE001 - botocore raises many types; the caller retries the day
            raise StoreError(f"{key}: {type(exc).__name__}: {exc}") from None
        if head.get("ContentLength") != len(data) or head.get("Metadata", {}).get("sha256") != digest.hex():
            raise StoreError(f"{key}: read-back metadata differs from what was sent")
        if head.get("ChecksumSHA256") not in (None, checksum):
            raise StoreError(f"{key}: the store's SHA-256 differs from ours")

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:  # noqa: BLE001 - only a missing key is a KeyError; the rest is an outage
            if _missing(exc):
                raise KeyError(key) from None
            raise StoreError(f"{key}: {type(exc).__name__}: {exc}") from None

    def exists(self, key: str) -> bool:
        """False only when S3 says the key is not there: a 503 or a timeout must never read as "absent"."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:  # noqa: BLE001
            if _missing(exc):
                return False
            raise StoreError(f"{key}: {type(exc).__name__}: {exc}") from None

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    keys.append(key[len(self.prefix) + 1:] if self.prefix else key)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"listing {prefix or '/'}: {type(exc).__name__}: {exc}") from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{key}: {type(exc).__name__}: {exc}") from None


def _missing(exc: Exception) -> bool:
    """Is this botocore error S3's "no such key" (GET says NoSuchKey, HEAD only 404)?"""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and str(response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


def open_store(url: str):
    """`file:///path` (or a plain path) -> LocalStore; `s3://bucket[/prefix]` -> S3Store."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme in ("", "file"):
        path = (parsed.netloc + parsed.path) if parsed.scheme == "file" else url
        return LocalStore(path)
    raise ValueError(f"unsupported store URL {url!r}: use file:///path or s3://bucket[/prefix]")
