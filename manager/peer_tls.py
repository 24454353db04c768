"""A standby's TLS for the leader's Follow: client credentials from --peer-* files, or minted from the agent CA.

The peer certificate names a manager, never a node: `CN=edge.k8s.io:manager:<identity>`,
`O=edge.k8s.io:managers`, client auth only, signed as agent certificates are
(manager/signing.py), so the leader's client check (manager/identity.py) can tell the two
apart. --peer-ca-file (else the agent CA's bundle) verifies the leader's serving certificate.
Pure but for reading the files; imports grpc and cryptography, never kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgecommon.tls import ReloadingFiles
from manager.following import channel_options
from manager.identity import MANAGER_USER_PREFIX, MANAGERS_GROUP
from manager.signing import AgentCa, sign

MAX_COMMON_NAME = 64  # X.509's upper bound on a CN (RFC 5280 ub-common-name)
MINTED_SECONDS = 24 * 3600.0  # a minted certificate lives a day; it is minted again at RENEW_FRACTION of that
RENEW_FRACTION = 0.7  # as kubelet rotates at 70-90%: well before it expires, never on every connection


class PeerTlsError(ValueError):
    """Peer credentials that cannot be made: one line saying why."""


class PeerCredentials(Protocol):
    """The channel credentials a Follow stream uses now (a rotated file or a renewed certificate included)."""

    def current(self) -> grpc.ChannelCredentials:
        """The credentials for the next connection."""
        ...


def peer_common_name(identity: str) -> str:
    """CN of `identity`'s peer certificate; PeerTlsError when the identity cannot be one."""
    if not identity or not identity.isprintable():
        raise PeerTlsError(f"the identity {identity[:80]!r} cannot name a peer certificate: empty or unprintable")
    cn = MANAGER_USER_PREFIX + identity
    if len(cn) > MAX_COMMON_NAME:
        room = MAX_COMMON_NAME - len(MANAGER_USER_PREFIX)
        raise PeerTlsError(f"the identity {identity[:80]!r} is too long for a peer certificate's CN (at most {room} "
                           "characters; set a shorter --leader-elect-identity)")
    return cn


def peer_subject(identity: str) -> x509.Name:
    """The subject of `identity`'s peer certificate."""
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, MANAGERS_GROUP),
        x509.NameAttribute(NameOID.COMMON_NAME, peer_common_name(identity)),
    ])


def mint_peer_certificate(ca: AgentCa, identity: str, *, seconds: float, now: datetime) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a fresh P-256 key for `identity`, signed by the agent CA like an agent's."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(peer_subject(identity)).sign(key, hashes.SHA256())
    cert_pem = sign(ca, csr, seconds=seconds, now=now)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem


def _roots(ca_file: Path | None, fallback: bytes | None) -> bytes | None:
    """The CA bundle that verifies the leader: --peer-ca-file, else the agent CA's bundle, else the system's."""
    return ca_file.read_bytes() if ca_file is not None else fallback


class FilePeerCredentials:
    """Credentials from the --peer-* files, read again when one changes (a rotated Secret)."""

    def __init__(self, *, ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None,
                 fallback_ca_pem: bytes | None = None) -> None:
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.fallback_ca_pem = fallback_ca_pem
        paths = [p for p in (ca_file, cert_file, key_file) if p is not None]
        self._files = ReloadingFiles(paths, key_file=key_file, load=self._load)

    def _load(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_roots(self.ca_file, self.fallback_ca_pem),
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )

    def current(self) -> grpc.ChannelCredentials:
        """The credentials, reloaded first if a file changed."""
        self._files.reload_if_changed()
        return self._files.current


class MintedPeerCredentials:
    """A peer certificate minted in memory from the agent CA (joining on, no --peer-cert-file), renewed early."""

    def __init__(self, *, ca_file: Path | None, agent_ca: AgentCa, identity: str, seconds: float = MINTED_SECONDS,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        peer_common_name(identity)  # a bad identity fails at start, not at the first connection
        self.agent_ca = agent_ca
        self.identity = identity
        self.seconds = seconds
        self._clock = clock
        self._roots = ReloadingFiles([ca_file] if ca_file else [], key_file=None,
                                     load=lambda: _roots(ca_file, agent_ca.bundle_pem))
        self.cert_pem = b""
        self.key_pem = b""
        self.mints = 0
        self._renew_at = datetime.min.replace(tzinfo=UTC)
        self._credentials: grpc.ChannelCredentials | None = None

    def current(self) -> grpc.ChannelCredentials:
        """The credentials, with a certificate minted again once RENEW_FRACTION of its life has passed."""
        now = self._clock()
        roots_changed = self._roots.reload_if_changed() is not None
        if now >= self._renew_at:
            self.cert_pem, self.key_pem = mint_peer_certificate(self.agent_ca, self.identity, seconds=self.seconds,
                                                                now=now)
            self.mints += 1
            self._renew_at = now + timedelta(seconds=self.seconds * RENEW_FRACTION)
            self._credentials = None
        if self._credentials is None or roots_changed:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=self._roots.current, private_key=self.key_pem, certificate_chain=self.cert_pem)
        return self._credentials


def peer_credentials(*, ca_file: Path | None, cert_file: Path | None, key_file: Path | None, identity: str,
                     agent_ca: AgentCa | None) -> PeerCredentials:
    """A standby's credentials from its --peer-* flags.

    The client certificate: --peer-cert-file/--peer-key-file when given, else one minted from
    the agent CA (joining on), else none (a leader that checks clients refuses the standby).
    The leader is verified with --peer-ca-file, else the agent CA's bundle (the documented
    joining setup: one CA signs the managers' serving certificates), else the system's roots.
    """
    fallback = agent_ca.bundle_pem if agent_ca is not None else None
    if cert_file is None and agent_ca is not None:
        return MintedPeerCredentials(ca_file=ca_file, agent_ca=agent_ca, identity=identity)
    return FilePeerCredentials(ca_file=ca_file, cert_file=cert_file, key_file=key_file, fallback_ca_pem=fallback)


def peer_channel(credentials: PeerCredentials | None) -> Callable[[str], grpc.aio.Channel]:
    """The Follower's channel factory: TLS with `credentials`, plaintext without (--insecure)."""
    def channel(address: str) -> grpc.aio.Channel:
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=channel_options())
        return grpc.aio.secure_channel(address, credentials.current(), options=channel_options())

    return channel
