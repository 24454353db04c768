"""The edge-agent's joining flags (--join-server, --token-file, --discovery-token-ca-cert-hash, ...) and their checks.

Owns argument shapes only: reads no token file and connects nowhere (a token is needed only
when the data dir holds no usable identity, so a bad token file is reported when joining).
Raises edgecommon's UsageError with one line, as agent/main.py's other checks do; addresses
and durations use edgecommon's one syntax. Must not import agent.main or agent.settings.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgecommon.addresses import parse_address
from edgecommon.quantities import parse_duration
from edgecommon.usage import UsageError, flag_value

DEFAULT_JOIN_TIMEOUT = "15m"  # kubelet's certificateWaitTimeout: a request may wait for a human's approval
SYNC_PORT = 50051  # the sync server's default port, on the joined host unless --sync-server says otherwise
TOKEN_RE = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})")  # kubeadm's bootstrap token: <token-id>.<token-secret>
TOKEN_SHAPE = "<token-id>.<token-secret> (6 and 16 characters of a-z, 0-9)"
_HASH_RE = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinSettings:
    """How to join a manager and renew the certificate it issues."""

    host: str  # a name or an IP address, verified against the manager's certificate (DNS or IP SANs)
    port: int
    ca_cert_hashes: tuple[str, ...]  # "sha256:<hex>"; the discovered CA must match one
    token_file: Path | None = None
    token: str | None = field(default=None, repr=False)  # never logged
    timeout: float = 900.0  # seconds a join may take, waiting for approval included

    @property
    def address(self) -> str:
        """HOST:PORT as the user wrote it, for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def default_sync_server(self) -> str:
        """The sync address when --sync-server is not given: the same host, the sync port."""
        return f"[{self.host}]:{SYNC_PORT}" if ":" in self.host else f"{self.host}:{SYNC_PORT}"


def add_join_flags(p: argparse.ArgumentParser) -> None:
    """The joining flags, named as kubeadm join names them."""
    g = p.add_argument_group("joining (instead of --ca-file/--cert-file/--key-file)")
    g.add_argument("--join-server", metavar="HOST:PORT",
                   help="the manager's join address: with a bootstrap token, the agent makes its key, gets its "
                        "certificate, keeps them in <data-dir>/pki and renews them; an existing valid one is reused")
    g.add_argument("--token-file", type=Path, metavar="PATH",
                   help="a file holding the bootstrap token <token-id>.<token-secret>; read only when joining")
    g.add_argument("--token", help="the bootstrap token itself (discouraged: other users see it in ps)")
    g.add_argument("--discovery-token-ca-cert-hash", action="append", metavar="sha256:HEX",
                   help="the hash of the manager's CA (sha256 of its DER SubjectPublicKeyInfo); repeatable, "
                        "one must match")
    g.add_argument("--join-timeout", default=DEFAULT_JOIN_TIMEOUT,
                   help=f"how long joining may take, approval included (default {DEFAULT_JOIN_TIMEOUT})")


def join_settings(a: argparse.Namespace) -> JoinSettings | None:
    """The parsed joining flags, None without --join-server; UsageError with one line on a mistake."""
    if a.join_server is None:
        for flag, value in (("--token-file", a.token_file), ("--token", a.token),
                            ("--discovery-token-ca-cert-hash", a.discovery_token_ca_cert_hash)):
            if value is not None:
                raise UsageError(f"{flag} needs --join-server")
        return None
    address = flag_value("--join-server", lambda t: parse_address(t, listen=False), a.join_server)
    timeout = flag_value("--join-timeout", parse_duration, a.join_timeout)
    if a.insecure:
        raise UsageError("--join-server cannot be combined with --insecure: a joined agent always uses TLS")
    if a.ca_file or a.cert_file or a.key_file:
        raise UsageError("--join-server keeps its own CA, certificate and key in <data-dir>/pki: "
                         "drop --ca-file, --cert-file and --key-file")
    if not a.discovery_token_ca_cert_hash:
        raise UsageError("--join-server needs --discovery-token-ca-cert-hash sha256:<hex> "
                         "(the manager logs it at start) to trust the right manager")
    hashes = []
    for raw in a.discovery_token_ca_cert_hash:
        for h in (s.strip().lower() for s in raw.split(",") if s.strip()):
            if not _HASH_RE.fullmatch(h):
                raise UsageError(f"--discovery-token-ca-cert-hash: not a CA hash: {h!r} (sha256: and 64 hex digits)")
            hashes.append(h)
    if a.token is not None and a.token_file is not None:
        raise UsageError("give --token-file or --token, not both")
    if a.token is not None and not TOKEN_RE.fullmatch(a.token.strip()):
        raise UsageError(f"--token is not a bootstrap token: expected {TOKEN_SHAPE}")  # the value is never echoed
    if timeout <= 0:
        raise UsageError("--join-timeout must be positive")
    return JoinSettings(host=address.host, port=address.port, ca_cert_hashes=tuple(hashes),
                        token_file=a.token_file, token=a.token.strip() if a.token is not None else None,
                        timeout=timeout)
