"""A CA in memory for the agent's pure pki tests (the real signer is the manager: tests/agent/test_joining_*)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class LocalCa:
    """A self-signed CA that issues node certificates with chosen subjects and validity."""

    name: str = "k8s-edge agent CA"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.cert = (x509.CertificateBuilder().subject_name(_name(self.name)).issuer_name(_name(self.name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=365))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, public_key: object, *, node: str = "edge01", org: str = "system:nodes",
              not_before: datetime = NOW - timedelta(minutes=5), lifetime: timedelta = timedelta(hours=1)) -> bytes:
        """PEM certificate for CN=system:node:<node>, O=<org>."""
        cert = (x509.CertificateBuilder().subject_name(_name(f"system:node:{node}", org)).issuer_name(self.cert.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
                .not_valid_before(not_before).not_valid_after(not_before + lifetime)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)
