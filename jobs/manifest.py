"""Daily manifests: canonical JSON listing every object of a prefix and day, chained and signed.

For each object: key, stored bytes and their SHA-256 (what `sha256sum -c SHA256SUMS` checks
offline), the SHA-256 of the *uncompressed* content (so recompression changes nothing), lines,
first and last timestamp. `previous` names the prior day's manifest and its SHA-256, a chain
across days like CloudTrail's digest files. The Ed25519 signature covers the canonical bytes of
everything else; the public key is published in the store as `keys/rollup-<key_id>.pub`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
LEAVES = "leaves.bin"


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def day_prefix(kind_prefix: str, day: str) -> str:
    """'logs', '2026-11-21' -> 'logs/2026/11/21'."""
    return f"{kind_prefix}/{day.replace('-', '/')}"


def key_id(verify_key: VerifyKey) -> str:
    return blake3.blake3(bytes(verify_key)).hexdigest()[:16]


def public_key_object(verify_key: VerifyKey) -> tuple[str, bytes]:
    return f"keys/rollup-{key_id(verify_key)}.pub", bytes(verify_key).hex().encode() + b"\n"


def load_or_create_key(path: Path) -> SigningKey:
    """The rollup's signing key: a hex Ed25519 seed in a 0600 file, created on first use."""
    path = Path(path)
    if path.exists():
        return SigningKey(bytes.fromhex(path.read_text().strip()))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(bytes(key).hex() + "\n")
    return key


def sign(doc: dict, key: SigningKey) -> dict:
    body = dict(doc, key_id=key_id(key.verify_key))
    body.pop("signature", None)
    return dict(body, signature=key.sign(canonical(body)).signature.hex())


def signature_ok(doc: dict, public_keys: dict[str, bytes]) -> bool:
    key = public_keys.get(doc.get("key_id", ""))
    if key is None or "signature" not in doc:
        return False
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        VerifyKey(key).verify(canonical(body), bytes.fromhex(doc["signature"]))
        return True
    except (BadSignatureError, ValueError):
        return False


def sha256sums(objects: list[dict], prefix: str) -> bytes:
    """`sha256sum -c` format, paths relative to the day's folder."""
    lines = [f"{o['stored_sha256']}  {o['key'][len(prefix) + 1:]}" for o in objects]
    return ("\n".join(lines) + "\n").encode()


def public_keys(store) -> dict[str, bytes]:
    keys = {}
    for key in store.list("keys/"):
        if key.startswith("keys/rollup-") and key.endswith(".pub"):
            keys[key[len("keys/rollup-"):-len(".pub")]] = bytes.fromhex(store.get(key).decode().strip())
    return keys
