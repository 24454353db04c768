"""What the agent's /metrics and /readyz say: its Prometheus collector and its readiness.

Owns the metric names and what "ready" means; edgecommon.serving serves them (a daemon
thread, so a slow scraper never blocks the sync loop). Values are read at scrape time
from the objects that own them (sync client, replica, reconciler), so nothing is
counted twice. Must not import manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.reconciling import ManifestReconciler
from agent.sync_client import SyncProgress
from eventlog import ReplicaStore

PREFIX = "k8s_edge_agent_"


@dataclass(slots=True)
class Readiness:
    """What /readyz answers: the replica is open and the manifest folder was reconciled once."""

    replica_open: bool = False

    def not_ready(self, reconciler: ManifestReconciler | None) -> str | None:
        """Why the agent is not ready; None when it is."""
        if not self.replica_open:
            return "replica not open"
        last = reconciler.stats.last if reconciler else None
        if last is None:
            return "waiting for the first reconcile (a never-synced replica waits for its first snapshot)"
        if not reconciler.stats.first_ok:
            return f"manifests not reconciled yet: {last.message}"
        return None


class CertificateProgress(Protocol):
    """What a joined agent's renewer shows (agent/renewing.py); hand-made certificates have none."""

    renewals: int

    def expires_at(self) -> float: ...


class AgentCollector:
    """Exposes the agent's state as Prometheus metrics, read when scraped."""

    def __init__(self, *, node: str, replica: ReplicaStore, reconciler: ManifestReconciler,
                 client: Callable[[], SyncProgress | None], certificate: CertificateProgress | None = None) -> None:
        self.node = node
        self.certificate = certificate  # a joined agent's renewer
        self.replica = replica
        self.reconciler = reconciler
        self.client = client  # the SyncClient once it exists

    def collect(self) -> Iterator[Metric]:
        """One consistent-enough reading of every agent metric."""
        c = self.client()
        try:
            cursor = self.replica.cursor()
            applied, pods = cursor.applied_offset, self.replica.state().pod_count
        except Exception:  # the store is closing: report what is still known
            applied, pods = 0, 0
        head = c.head_offset if c is not None else 0

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(PREFIX + name, doc, labels=["node"])
            g.add_metric([self.node], value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(PREFIX + name, doc, labels=["node"])
            m.add_metric([self.node], value)
            return m

        yield gauge("applied_offset", "Newest offset of this node applied to the replica.", applied)
        yield gauge("head_offset", "Newest offset of this node the manager announced.", head)
        yield gauge("lag_events", "head_offset minus applied_offset (0 when current).", max(head - applied, 0))
        yield gauge("replica_pods", "Pods the replica says this node runs.", pods)
        yield gauge("connected", "1 while a sync stream with a manager is open.",
                    1 if c is not None and c.connected else 0)
        yield counter("events_applied", "Events applied to the replica by this process.",
                      c.events_applied if c is not None else 0)
        yield counter("batches_applied", "Event batches applied by this process.",
                      c.batches_applied if c is not None else 0)
        yield counter("snapshots_installed", "Snapshots installed by this process.",
                      c.snapshots_installed if c is not None else 0)
        yield counter("reconnects", "Sync stream reconnects by this process.", c.reconnects if c is not None else 0)
        yield counter("leader_redirects", "Managers that answered 'not the leader' (a standby), sending this agent "
                      "on to another address.", c.leader_redirects if c is not None else 0)
        s = self.reconciler.stats
        r = CounterMetricFamily(PREFIX + "reconciles", "Manifest folder reconciles, by kind.", labels=["node", "kind"])
        r.add_metric([self.node, "full"], s.full)
        r.add_metric([self.node, "changes"], s.incremental)
        yield r
        yield counter("manifest_writes", "Manifest files written.", s.written)
        yield counter("manifest_removals", "Manifest files removed.", s.removed)
        yield counter("manifest_write_errors", "Manifest writes or removals that failed.", s.write_errors)
        yield gauge("managed_manifests", "Manifest files the agent manages now.", self.reconciler.managed)
        if self.certificate is not None:  # as kubelet_certificate_manager_client_expiration_seconds
            yield gauge("client_certificate_expiration_seconds", "When the joined client certificate expires "
                        "(Unix time): alert well before it, e.g. when under 3 days away.",
                        self.certificate.expires_at())
            yield counter("client_certificate_renewals", "Client certificates renewed by this process.",
                          self.certificate.renewals)
        yield gauge("manifests_ok", "1 when the last reconcile left the folder equal to the replica.",
                    1 if s.last is not None and s.last.ok else 0)
