"""What agents do on their sync streams, told to everyone who cares: status, Events, metrics, the log.

Owns the sync service's one AgentObserver (sync_session.py): it fans each call out to the
status writer, the EdgeNode Events and the metrics, on the event loop thread. Imports
neither grpc nor the kubernetes client.
"""

from __future__ import annotations

from loguru import logger

from eventlog import SnapshotCause
from manager.events import EdgeNodeEvents
from manager.metrics import Metrics
from manager.status import StatusWriter
from manager.sync_session import AgentObserver


class AgentActivity(AgentObserver):
    """The AgentObserver of a running manager; counts the connected agents for metrics."""

    def __init__(self, *, status: StatusWriter, metrics: Metrics, events: EdgeNodeEvents | None = None) -> None:
        self._status = status
        self._metrics = metrics
        self._events = events
        self.connected_agents = 0

    def connected(self, node: str, *, peer: str) -> None:
        """An agent opened its stream."""
        self.connected_agents += 1
        logger.info("agent of node {} connected from {}", node, peer)
        self._status.connected(node, peer=peer)
        if self._events:
            self._events.connected(node, peer=peer)

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        """The agent applied its events through applied_offset."""
        self._status.acknowledged(node, applied_offset=applied_offset, digest=digest)

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        """The agent reconciled its manifest folder."""
        self._status.reported(node, manifests_ok=manifests_ok, message=message, managed_manifests=managed_manifests)
        if self._events:
            self._events.reported(node, manifests_ok=manifests_ok, message=message)

    def disconnected(self, node: str) -> None:
        """An agent's stream ended."""
        self.connected_agents = max(0, self.connected_agents - 1)
        logger.info("agent of node {} disconnected", node)
        self._status.disconnected(node)
        if self._events:
            agent = self._status.agents.get(node)
            self._events.disconnected(node, offline=agent is None or agent.connected == 0)

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None:
        """The agent got a snapshot (the status moves with the ack that follows, not here)."""
        self._metrics.snapshots_sent.labels(reason=cause.reason.value).inc()
        if self._events:
            self._events.snapshot_sent(node, cause=cause)
