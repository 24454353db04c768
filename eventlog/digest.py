"""Order-independent digests of a node's pods.

A node's digest is the XOR of a 64-bit hash of each pod's identity and manifest,
so a put or delete updates it in O(1) and both sides reach the same value
whatever order they applied the same state in.
"""

from __future__ import annotations

from typing import Iterable

from xxhash import xxh3_64_intdigest

from eventlog.records import PodEntry


def pod_hash(namespace: str, name: str, manifest: bytes) -> int:
    """Hash one pod; the NUL separators make the fields unambiguous.

    XXH3-64: not cryptographic (the digest detects divergence, it does not
    authenticate), and about 25x cheaper than blake2b on a 1 KB manifest, which
    matters because every appended and every applied event is hashed.
    """
    return xxh3_64_intdigest(b"".join((namespace.encode(), b"\0", name.encode(), b"\0", manifest)))


def pod_hash_bytes(namespace: bytes, name: bytes, manifest: bytes) -> int:
    """pod_hash for fields already encoded (the append and apply loops have them as bytes)."""
    return xxh3_64_intdigest(b"".join((namespace, b"\0", name, b"\0", manifest)))


def digest_of(pods: Iterable[PodEntry]) -> int:
    """Digest of a set of pods, from scratch (for checks and snapshots)."""
    d = 0
    for p in pods:
        d ^= pod_hash(p.namespace, p.name, p.manifest)
    return d


def format_digest(digest: int) -> str:
    """Hex form shown to users and written in logs."""
    return f"{digest:016x}"
