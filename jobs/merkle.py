"""RFC 6962 Merkle trees for a log that only grows: roots, inclusion and consistency proofs, verifiers.

Leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right); a tree of n leaves
splits at the largest power of two below n (RFC 6962 §2.1). Verification follows RFC 9162 §2.1.3.2
and §2.1.4.2.

Nobody holds the whole log: a `Tree` is the log's *frontier* at size `base` (the roots of the perfect
subtrees that make up the first `base` leaves, largest first, one per set bit of `base`) plus the
leaves appended since. Every hash a new root, a new frontier, a consistency proof from `base` or an
inclusion proof of an appended leaf needs is either a frontier node or built from appended leaves,
so days that expired from the store never restart the log.
"""

from __future__ import annotations

import hashlib

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(leaves: list[bytes]) -> bytes:
    """Merkle tree hash of leaf hashes (the empty tree hashes to SHA-256 of nothing)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def frontier_ranges(size: int) -> list[tuple[int, int]]:
    """The [start, end) of each perfect subtree a tree of `size` leaves is made of, largest first."""
    ranges, start, bit = [], 0, 1 << max(size.bit_length() - 1, 0)
    while bit and size:
        if size & bit:
            ranges.append((start, start + bit))
            start += bit
        bit >>= 1
    return ranges


class Tree:
    """A log of `base` leaves known by their frontier, followed by `leaves` (leaf hashes)."""

    def __init__(self, base: int, frontier: list[bytes], leaves: list[bytes]):
        ranges = frontier_ranges(base)
        if len(ranges) != len(frontier):
            raise ValueError(f"a frontier of {len(frontier)} hashes cannot describe {base} leaves")
        self.base, self.leaves, self.size = base, leaves, base + len(leaves)
        self._known = dict(zip(ranges, frontier))

    def hash(self, lo: int, hi: int) -> bytes:
        """Merkle tree hash of leaves [lo, hi)."""
        if (lo, hi) in self._known:
            return self._known[(lo, hi)]
        if lo >= self.base:
            return root(self.leaves[lo - self.base:hi - self.base])
        if hi - lo <= 1:
            raise ValueError(f"leaf {lo} lies inside the frontier: only leaves from {self.base} on are known")
        k = _split(hi - lo)
        return node_hash(self.hash(lo, lo + k), self.hash(lo + k, hi))

    def root(self) -> bytes:
        return self.hash(0, self.size) if self.size else EMPTY_ROOT

    def frontier(self) -> list[bytes]:
        return [self.hash(lo, hi) for lo, hi in frontier_ranges(self.size)]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Audit path of leaf `index` (global position, at least `base`) in the tree of `size` leaves."""
        return self._path(index, 0, self.size)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo <= 1:
            return []
        k = _split(hi - lo)
        if m < lo + k:
            return self._path(m, lo, lo + k) + [self.hash(lo + k, hi)]
        return self._path(m, lo + k, hi) + [self.hash(lo, lo + k)]

    def consistency_proof(self) -> list[bytes]:
        """Proof that the tree of `base` leaves is a prefix of this one (RFC 6962 §2.1.2 SUBPROOF)."""
        if self.base in (0, self.size):
            return []
        return self._subproof(self.base, 0, self.size, True)

    def _subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        if m == hi:
            return [] if whole else [self.hash(lo, hi)]
        k = _split(hi - lo)
        if m <= lo + k:
            return self._subproof(m, lo, lo + k, whole) + [self.hash(lo + k, hi)]
        return self._subproof(m, lo + k, hi, False) + [self.hash(lo, lo + k)]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], expected_root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    if m == 0:
        return not proof
    if m == n:
        return not proof and old_root == new_root
    if m > n or not proof:
        return False
    if m & (m - 1) == 0:  # m is a power of two: the old root is itself a node of the proof path
        proof = [old_root] + proof
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
