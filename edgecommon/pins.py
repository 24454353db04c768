"""Public-key pins both ends of joining compute alike: kubeadm's discovery hash and key digests.

The agent pins the manager's CA by `ca_cert_hash`; the manager prints that hash and names a
CSR by its key's digest. Imports `cryptography` (load it only where joining is on) and
nothing of the project.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


def spki_der(public_key: PublicKeyTypes) -> bytes:
    """The key's DER SubjectPublicKeyInfo: what both pins hash, and how two keys compare."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_sha256(public_key: PublicKeyTypes) -> str:
    """sha256 hex of the key's SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def ca_cert_hash(cert: x509.Certificate) -> str:
    """kubeadm's --discovery-token-ca-cert-hash of a CA certificate: `sha256:` and its key's sha256."""
    return "sha256:" + key_sha256(cert.public_key())
