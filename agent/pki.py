"""The agent's joined identity on disk: <data-dir>/pki with ca.crt (the discovered CA) and agent.pem (certificate and key).

Owns making keys and certificate requests, checking what the manager issued, and writing the
identity so that nothing is ever half-written: the first identity appears as a whole
directory (written aside, then renamed into place), a renewed one as one file holding both
certificate and key, replaced by rename. Pure files and crypto: no network, no grpc, no manager.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgecommon.names import NODE_USER_PREFIX, NODES_GROUP
from edgecommon.pins import ca_cert_hash, spki_der
from edgecommon.files import (
    PRIVATE_DIR_MODE,
    PrivacyError,
    check_private_key_mode,
    ensure_private_dir,
    fsync_dir,
    write_private_file,
)

PKI_SUBDIR = "pki"
CA_FILE = "ca.crt"
AGENT_FILE = "agent.pem"
_STAGING = ".pki-new"  # the first identity is written here, then renamed to pki/


class PkiError(Exception):
    """An identity that cannot be used or made; the message is one line naming the file and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """The certificate this node holds: which node it names and when it is valid."""

    node: str
    serial: int
    not_before: datetime
    not_after: datetime

    def lifetime(self) -> float:
        """Seconds from notBefore to notAfter."""
        return (self.not_after - self.not_before).total_seconds()


def pki_dir(data_dir: Path) -> Path:
    """Where the joined identity lives."""
    return data_dir / PKI_SUBDIR


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key, made on the node and never sent anywhere (kubelet's choice)."""
    return ec.generate_private_key(ec.SECP256R1())


def certificate_request(key: ec.EllipticCurvePrivateKey, node: str) -> bytes:
    """PEM CSR for CN=system:node:<node>, O=system:nodes, nothing else requested."""
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
        x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node),
    ])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def parse_certificates(pem: bytes, *, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM text; PkiError naming `what` when there is none or one is malformed."""
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except ValueError:
        raise PkiError(f"{what}: no valid PEM certificate in it") from None


def node_of(cert: x509.Certificate) -> str | None:
    """The node a certificate names (CN=system:node:<name>, O=system:nodes), or None."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    if len(cns) != 1 or NODES_GROUP not in orgs or not str(cns[0].value).startswith(NODE_USER_PREFIX):
        return None
    return str(cns[0].value)[len(NODE_USER_PREFIX):]


def _issued_by(cert: x509.Certificate, bundle: tuple[x509.Certificate, ...]) -> bool:
    for ca in bundle:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def check_certificate(cert: x509.Certificate, *, public_key: object, node: str,
                      bundle: tuple[x509.Certificate, ...], now: datetime, what: str) -> Identity:
    """The identity a certificate gives this node; PkiError when it is not for this key, node, CA or time."""
    if spki_der(cert.public_key()) != spki_der(public_key):
        raise PkiError(f"{what}: the certificate is not for this key")
    named = node_of(cert)
    if named != node:
        names = f"node {named}" if named else f"subject {cert.subject.rfc4514_string()}"
        raise PkiError(f"{what}: the certificate names {names}, not node {node}")
    if not _issued_by(cert, bundle):
        raise PkiError(f"{what}: the certificate was not signed by the manager's CA")
    identity = Identity(node=node, serial=cert.serial_number, not_before=cert.not_valid_before_utc,
                        not_after=cert.not_valid_after_utc)
    if identity.not_after <= now:
        raise PkiError(f"{what}: the certificate expired at {identity.not_after.isoformat()}")
    return identity


def agent_pem(certificate_pem: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """agent.pem's content: the issued certificate (chain) then the key, so the pair is one file."""
    certs = parse_certificates(certificate_pem, what="the issued certificate")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs) + key_pem


def read_identity(data_dir: Path, *, node: str, now: datetime, pins: tuple[str, ...] = ()) -> Identity | None:
    """The usable identity in <data-dir>/pki, None when there is none; PkiError saying why one cannot be used.

    With `pins` (the --discovery-token-ca-cert-hash values), ca.crt must hold a CA of one of
    them: an operator who pins another manager's CA gets the node joined to that one.
    """
    d = pki_dir(data_dir)
    ca_path, agent_path = d / CA_FILE, d / AGENT_FILE
    if not agent_path.exists() and not ca_path.exists():
        return None
    try:
        ensure_private_dir(d)
        check_private_key_mode(agent_path)
        bundle = parse_certificates(ca_path.read_bytes(), what=str(ca_path))
        data = agent_path.read_bytes()
    except PrivacyError as exc:
        raise PkiError(str(exc)) from None
    except OSError as exc:
        raise PkiError(f"{exc.filename or d}: {exc.strerror or exc}") from None
    if pins and not {ca_cert_hash(ca) for ca in bundle} & set(pins):
        raise PkiError(f"{ca_path}: no CA in it matches --discovery-token-ca-cert-hash {', '.join(pins)}")
    certs = parse_certificates(data, what=str(agent_path))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{agent_path}: no valid unencrypted PEM private key in it") from None
    return check_certificate(certs[0], public_key=key.public_key(), node=node, bundle=bundle, now=now,
                             what=str(agent_path))


def write_identity(data_dir: Path, *, bundle_pem: bytes, pem: bytes) -> None:
    """Store a newly joined identity: pki/ appears whole (staged, renamed); an unusable old one is replaced file by file.

    Replacing writes ca.crt before agent.pem, each atomically: a crash in between leaves the old,
    unusable agent.pem, so the next start joins again.
    """
    d = pki_dir(data_dir)
    if d.exists():
        ensure_private_dir(d)
        write_private_file(d / CA_FILE, bundle_pem)
        write_private_file(d / AGENT_FILE, pem)
        return
    staging = data_dir / _STAGING
    shutil.rmtree(staging, ignore_errors=True)  # a crash's leftover: never an identity
    staging.mkdir(mode=PRIVATE_DIR_MODE)
    write_private_file(staging / CA_FILE, bundle_pem)
    write_private_file(staging / AGENT_FILE, pem)
    staging.rename(d)
    fsync_dir(data_dir)


def write_renewed(data_dir: Path, pem: bytes) -> None:
    """Replace agent.pem with a renewed certificate and its new key in one rename."""
    write_private_file(pki_dir(data_dir) / AGENT_FILE, pem)


def remove_staging(data_dir: Path) -> None:
    """Drop what a join interrupted by a crash left aside; it never became the identity."""
    shutil.rmtree(data_dir / _STAGING, ignore_errors=True)
