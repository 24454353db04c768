"""The agent CA: its discovery hash, the checks of an agent's CSR, and the signing of its certificate.

The certificate follows the node-identity rule of the sync channel (kubelet's):
`CN=system:node:<node>, O=system:nodes`, client auth only. Pure (the `cryptography` package on
bytes and times); imports neither kubernetes nor grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgecommon.names import NODE_USER_PREFIX, NODES_GROUP
from edgecommon.pins import key_sha256
from manager.identity import node_name_problem

SIGNER_NAME = "edge.k8s.io/agent"
BACKDATE = timedelta(minutes=5)  # kube's signer backdates too: a node clock a little behind still accepts it
MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1)
_CSR_NAME_PREFIX = "edge-agent-"
_MAX_NAME = 253


class CaError(ValueError):
    """The agent CA cannot sign: one line saying why."""


class CsrProblem(ValueError):
    """A certificate request that is refused: one line naming what is wrong."""


@dataclass(frozen=True, slots=True)
class AgentCa:
    """The CA that signs agents' client certificates, and the bundle agents discover."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    bundle_pem: bytes
    """tls.crt as given: the signing certificate first, then any CA that also verifies the manager."""

    @property
    def certificate_pem(self) -> bytes:
        """The signing certificate alone (the sync listener trusts only it for client certificates)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def load_ca(cert_pem: bytes, key_pem: bytes, *, now: datetime) -> AgentCa:
    """The CA from tls.crt and tls.key (PEM); CaError when it cannot sign agent certificates."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise CaError(f"tls.crt is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CaError(f"tls.key is not an unencrypted PEM private key: {' '.join(str(exc).split())}") from None
    cert = certs[0]
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CaError("tls.key is neither an EC nor an RSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise CaError("tls.key is not the key of the first certificate in tls.crt")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaError(f"the certificate {cert.subject.rfc4514_string()} is not a CA (basicConstraints CA:TRUE)")
    if cert.not_valid_after_utc <= now:
        raise CaError(f"the CA certificate {cert.subject.rfc4514_string()} expired at {cert.not_valid_after_utc}")
    return AgentCa(certificate=cert, key=key, bundle_pem=cert_pem)


def key_digest(csr: x509.CertificateSigningRequest) -> str:
    """sha256 hex of the request's public key: names the CSR object, so a key is submitted once."""
    return key_sha256(csr.public_key())


def csr_object_name(node: str, csr: x509.CertificateSigningRequest) -> str:
    """edge-agent-<node>-<10 hex of the key's sha256>, within an object name's 253 characters."""
    room = _MAX_NAME - len(_CSR_NAME_PREFIX) - 11
    return f"{_CSR_NAME_PREFIX}{node[:room].rstrip('.-')}-{key_digest(csr)[:10]}"


def usages(csr: x509.CertificateSigningRequest) -> list[str]:
    """The CSR object's spec.usages: client auth, and key encipherment for RSA as kubelet asks."""
    extra = ["key encipherment"] if isinstance(csr.public_key(), rsa.RSAPublicKey) else []
    return ["digital signature", *extra, "client auth"]


def check_request(pem: bytes, *, node: str) -> x509.CertificateSigningRequest:
    """The parsed request when it may become `node`'s certificate; CsrProblem naming what is wrong."""
    problem = node_name_problem(node)
    if problem is not None:
        raise CsrProblem(problem)
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise CsrProblem("the csr is not a PEM CERTIFICATE REQUEST") from None
    try:
        if not csr.is_signature_valid:
            raise CsrProblem("the csr's signature does not verify with its own key")
    except (InvalidSignature, ValueError, TypeError):
        raise CsrProblem("the csr's signature does not verify with its own key") from None
    attrs = [(a.oid, a.value) for a in csr.subject]
    want = [(NameOID.COMMON_NAME, NODE_USER_PREFIX + node), (NameOID.ORGANIZATION_NAME, NODES_GROUP)]
    if sorted(attrs, key=lambda t: t[0].dotted_string) != sorted(want, key=lambda t: t[0].dotted_string):
        raise CsrProblem(f"the csr's subject {csr.subject.rfc4514_string()[:200]!r} is not exactly "
                         f"CN={NODE_USER_PREFIX}{node}, O={NODES_GROUP}")
    if len(csr.extensions) > 0:
        names = ", ".join(e.oid._name for e in csr.extensions)
        raise CsrProblem(f"the csr requests extensions ({names}); none may be requested")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise CsrProblem(f"the csr's EC key is on {key.curve.name}; use P-256 or P-384")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrProblem(f"the csr's RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
    else:
        raise CsrProblem("the csr's key is neither EC (P-256, P-384) nor RSA")
    return csr


def sign(ca: AgentCa, csr: x509.CertificateSigningRequest, *, seconds: float, now: datetime) -> bytes:
    """The client certificate (PEM) for a checked request, valid `seconds` from now, never beyond the CA."""
    not_after = min(now + timedelta(seconds=seconds), ca.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - BACKDATE, ca.certificate.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=isinstance(csr.public_key(), rsa.RSAPublicKey),
            content_commitment=False, data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def lifetime_text(seconds: float) -> str:
    """A certificate lifetime for log lines as the flag spells it: 8760h, 30m, 20s."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def certificate_subject(der: bytes) -> tuple[str, list[str]]:
    """(RFC 4514 subject, DNS SANs) of a DER certificate: what the identity rule reads."""
    cert = x509.load_der_x509_certificate(der)
    try:
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    return cert.subject.rfc4514_string(), list(dns)
