"""Manifests and checkpoints: canonical JSON, Ed25519-signed, named by their place in the chain.

A kind's manifests form one chain in the order they were written: `seq` 1, 2, 3 ... and each names
the previous one's key and SHA-256 (like CloudTrail's digest files). The first manifest of a day
seals the day; objects that arrive later for a day already sealed get a supplementary manifest in
the same folder, later in the chain, so a signed manifest is never rewritten. Names carry the seq:
`logs/yyyy/mm/dd/manifest-000042.json`, and for audit `checkpoint-000042.json` beside it.

For each object a manifest lists: key, stored bytes and their SHA-256 (what `sha256sum -c SHA256SUMS`
checks offline), the SHA-256 of the *uncompressed* content (so recompression changes nothing),
lines, first and last timestamp, and `source`: the spool file and the byte range it came from.

Keys: a signature proves something only against a key the verifier already trusts. `keys/` in the
store (and in an audit bundle) is informational; verify takes its trusted keys from `--public-key`
files, VIGIA_TRUSTED_KEYS, or the public half of the rollup's key file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

SUMS = "SHA256SUMS"
# A file in a day folder: <prefix>/yyyy/mm/dd/<name>
DAY_FILE = re.compile(r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<name>[^/]+)")
MANIFEST_NAME = re.compile(r"manifest-(?P<seq>\d{6,})\.json")
CHECKPOINT_NAME = re.compile(r"checkpoint-(?P<seq>\d{6,})\.json")


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def day_prefix(kind_prefix: str, day: str) -> str:
    """'logs', '2026-11-21' -> 'logs/2026/11/21'."""
    return f"{kind_prefix}/{day.replace('-', '/')}"


def manifest_key(kind_prefix: str, day: str, seq: int) -> str:
    return f"{day_prefix(kind_prefix, day)}/manifest-{seq:06d}.json"


def checkpoint_key(kind_prefix: str, day: str, seq: int) -> str:
    return f"{day_prefix(kind_prefix, day)}/checkpoint-{seq:06d}.json"


def state_key(kind: str) -> str:
    """The chain's head and the Merkle log's frontier: outside the day folders, so it never expires."""
    return f"state/{kind}.json"


def day_file(kind_prefix: str, key: str) -> tuple[str, str] | None:
    """'logs/2026/11/21/x.zst' -> ('2026-11-21', 'x.zst'); None for a key outside the day folders."""
    match = DAY_FILE.fullmatch(key[len(kind_prefix) + 1:]) if key.startswith(kind_prefix + "/") else None
    return (f"{match['y']}-{match['m']}-{match['d']}", match["name"]) if match else None


def manifest_seq(kind_prefix: str, key: str) -> int | None:
    found = day_file(kind_prefix, key)
    match = MANIFEST_NAME.fullmatch(found[1]) if found else None
    return int(match["seq"]) if match else None


def key_id(verify_key: VerifyKey) -> str:
    return blake3.blake3(bytes(verify_key)).hexdigest()[:16]


def public_key_object(verify_key: VerifyKey) -> tuple[str, bytes]:
    return f"keys/rollup-{key_id(verify_key)}.pub", bytes(verify_key).hex().encode() + b"\n"


def load_or_create_key(path: Path) -> SigningKey:
    """The rollup's signing key: a hex Ed25519 seed in a 0600 file, created on first use, with its
    public half in `<path>.pub` (hand that file to whoever verifies)."""
    path = Path(path)
    if path.exists():
        key = SigningKey(bytes.fromhex(path.read_text().strip()))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(bytes(key).hex() + "\n")
    public = Path(f"{path}.pub")
    if not public.exists():
        public.write_bytes(public_key_object(key.verify_key)[1])
    return key


def trusted_keys(public_key_files: list[Path], key_file: Path | None = None) -> dict[str, tuple[bytes, str]]:
    """key id -> (public key, where it came from): `.pub` files (hex), and the public half of a
    rollup key file."""
    keys = {}
    for path in public_key_files:
        try:
            raw = bytes.fromhex(Path(path).read_text().strip())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a public key file (hex of 32 bytes): {exc}") from None
        if len(raw) != 32:
            raise ValueError(f"{path}: not a public key file (hex of 32 bytes)")
        keys[key_id(VerifyKey(raw))] = (raw, str(path))
    if key_file is not None:
        public = SigningKey(bytes.fromhex(Path(key_file).read_text().strip())).verify_key
        keys[key_id(public)] = (bytes(public), f"{key_file} (public half)")
    return keys


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
    except (BadSignatureError, ValueError, TypeError):
        return False


def sha256sums(objects: list[dict], folder: str) -> bytes:
    """`sha256sum -c` format, paths relative to the day's folder, sorted by path."""
    return "".join(f"{o['stored_sha256']}  {o['key'][len(folder) + 1:]}\n" for o in sorted(objects, key=lambda o: o["key"])).encode()
