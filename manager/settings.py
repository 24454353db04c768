"""The edge-manager's settings: one frozen, typed tree built from its flags by main.py (which holds the defaults).

Owns the shape of what the manager was told, not the parsing (main.py) nor the wiring
(daemon.py). Must not import grpc or kubernetes: `--help` and a usage error load neither.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from edgecommon.addresses import Address
from edgecommon.logs import LogSettings
from manager.identity import NodeIdentity
from manager.podsecurity import Policy


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeSettings:
    """Which API server and which EdgeNodes."""

    kubeconfig: Path | None = None
    """None: $KUBECONFIG, ~/.kube/config, else the in-cluster config."""
    master: str | None = None
    """Overrides the kubeconfig's server."""
    namespace: str | None = None
    """Watch EdgeNodes of this namespace only; None: all."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTls:
    """Server certificate; with client_ca_file, agents must present a certificate naming their node.

    The files are read again when they change (checked at each new connection), so a rotated
    certificate or CA bundle is used without a restart.
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    node_identity: NodeIdentity = NodeIdentity.KUBELET
    agent_ca_pem: bytes | None = None
    """The agent CA of --agent-ca-secret (docs/joining.md), read at start: trusted for client certificates beside
    client_ca_file."""

    @property
    def checks_clients(self) -> bool:
        """Whether client certificates are required and name the node."""
        return self.client_ca_file is not None or self.agent_ca_pem is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncFlags:
    """The sync service as the command line sets it (manager.sync_session.SyncSettings holds the tuning)."""

    address: str
    """Listen address, checked by edgecommon.addresses."""
    tls: ServerTls | None = None
    """None: plaintext (--insecure)."""
    max_streams: int
    heartbeat_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Compaction bounds; None means unbounded."""

    keep_last: int | None = None
    max_age_seconds: float | None = None
    max_bytes: int | None = None

    @property
    def enabled(self) -> bool:
        """Whether any bound is set."""
        return any(v is not None for v in (self.keep_last, self.max_age_seconds, self.max_bytes))


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """Where the log lives and how it is kept bounded."""

    data_dir: Path
    retention: Retention
    compaction_interval: float
    export_dir: Path | None = None
    """Write what compaction drops here first; None: no export."""


class Approval(enum.Enum):
    """--join-approval: who approves a join's CSR."""

    AUTO = "auto"
    """A valid bootstrap token approves it (reason AutoApproved)."""
    MANUAL = "manual"
    """It waits for `kubectl certificate approve|deny`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinSettings:
    """Joining agents with bootstrap tokens (docs/joining.md): on only with --agent-ca-secret."""

    ca_namespace: str
    ca_name: str
    """The kubernetes.io/tls Secret of the agent CA."""
    address: Address
    """--join-server, the HTTPS join listener."""
    approval: Approval
    certificate_seconds: float
    """--agent-certificate-duration; a CSR's spec.expirationSeconds may shorten it."""
    cert_file: Path
    key_file: Path
    """The sync service's serving certificate and key, served on the join listener too."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseSettings:
    """The coordination.k8s.io/v1 Lease a manager contends for (--leader-elect), with client-go's three timings.

    Checked as client-go's NewLeaderElector checks them (a ValueError naming the bad value), plus
    one rule of ours: the Lease stores whole seconds, so the truncated duration other electors
    read must still exceed the renew deadline.
    """

    namespace: str
    name: str
    identity: str
    """Holder identity written to the Lease: stable across restarts of one data dir."""
    lease_duration: float
    """Seconds a standby waits, from when it saw the record last change, before taking the lease over."""
    renew_deadline: float
    """Seconds after its last successful renew at which the leader stops leading (the fence)."""
    retry_period: float
    """Seconds between attempts (jittered up to x2.2 while not leading, as client-go)."""
    sync_address: str
    """HOST:PORT agents and standbys reach this manager at when it leads (annotation edge.k8s.io/sync-address)."""

    def __post_init__(self) -> None:
        for field_name in ("namespace", "name", "identity", "sync_address"):
            if not getattr(self, field_name):
                raise ValueError(f"the lease {field_name.replace('_', ' ')} must not be empty")
        if self.retry_period <= 0:
            raise ValueError(f"the retry period must be positive, not {self.retry_period:g}s")
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise ValueError(f"the renew deadline ({self.renew_deadline:g}s) must be longer than 1.2 x the retry "
                             f"period ({self.retry_period:g}s)")
        if int(self.lease_duration) <= self.renew_deadline:
            raise ValueError(f"the lease duration ({self.lease_duration:g}s, whole seconds in the Lease) must be "
                             f"longer than the renew deadline ({self.renew_deadline:g}s)")


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerTls:
    """How a standby connects to the leader's Follow service; the files may be None (see docs/ha.md)."""

    cert_file: Path | None = None
    """Client certificate O=edge.k8s.io:managers; None: minted from the agent CA (joining on)."""
    key_file: Path | None = None
    ca_file: Path | None = None
    """Verifies the leader's serving certificate."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PodRef:
    """The manager's own Pod, labelled edge.k8s.io/manager-role=leader|standby for the agents' Service."""

    namespace: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HighAvailability:
    """--leader-elect: several managers, one leading, the others following its log."""

    lease: LeaseSettings
    standby_timeout: float = 10.0
    """An in-sync standby silent this long while behind stops holding agents back."""
    peer_tls: PeerTls | None = None
    """None: plaintext Follow (--insecure)."""
    pod: PodRef | None = None
    """None: no pod label (not run in a cluster)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerSettings:
    """Everything the manager was told on its command line, checked."""

    kube: KubeSettings
    sync: SyncFlags
    store: StoreSettings
    default_pod_security: Policy
    """Pod Security of namespaces without the enforce label (--default-pod-security-level and -version)."""
    status_refresh_seconds: float
    watch_timeout_seconds: float
    metrics_addr: Address | None = None
    """None: no /metrics, /healthz, /readyz."""
    logging: LogSettings
    join: JoinSettings | None = None
    """None: no joining (no --agent-ca-secret)."""
    ha: HighAvailability | None = None
    """None: one manager, leading forever (no --leader-elect)."""


def describe_retention(r: Retention, interval: float) -> str:
    """One line for the start-up log: the bounds in force."""
    if not r.enabled:
        return "off: the event log is never compacted"
    parts = []
    if r.max_age_seconds is not None:
        age = r.max_age_seconds
        parts.append(f"older than {age / 86400:g}d" if age >= 86400 else f"older than {age:g}s")
    if r.max_bytes is not None:
        parts.append(f"beyond {r.max_bytes / 2**20:g} MiB of records")
    if r.keep_last is not None:
        parts.append(f"beyond the newest {r.keep_last}")
    return f"events {' or '.join(parts)} are compacted every {interval:g}s"
