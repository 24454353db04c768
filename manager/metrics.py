"""Prometheus metrics and the /healthz and /readyz endpoints of edge-manager.

Owns the metric names and what /readyz means; edgecommon.serving serves them (a thread,
so a busy event loop never makes probes fail). Values that already live elsewhere (head offset,
agents, lag, watch restarts) are read at scrape time through callbacks instead of being
copied on every change. Imports neither grpc nor the kubernetes client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgecommon.addresses import Address
from edgecommon.serving import HealthServer


class _Live(Collector):
    """Metrics computed at scrape time from the manager's own state."""

    def __init__(
        self,
        *,
        head_offset: Callable[[], int],
        connected_agents: Callable[[], int],
        node_lag: Callable[[], Mapping[str, int]],
        watch_restarts: Callable[[], Mapping[tuple[str, str], int]],
        sync_streams: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._head = head_offset
        self._agents = connected_agents
        self._lag = node_lag
        self._restarts = watch_restarts
        self._streams = sync_streams

    def collect(self) -> Iterator[Metric]:
        """One sample set per scrape; a closed store yields nothing rather than an error."""
        try:
            yield GaugeMetricFamily("k8s_edge_manager_head_offset", "Offset of the newest event in the log.",
                                    value=self._head())
        except Exception:  # the store is closing: skip the sample
            pass
        yield GaugeMetricFamily("k8s_edge_manager_connected_agents", "Agent streams currently open.",
                                value=self._agents())
        lag = GaugeMetricFamily("k8s_edge_manager_node_lag_events",
                                "Events of the node the agent has not acknowledged (headOffset - syncedOffset).",
                                labels=["node"])
        for node, value in sorted(self._lag().items()):
            lag.add_metric([node], value)
        yield lag
        restarts = CounterMetricFamily("k8s_edge_manager_watch_restarts",
                                       "Restarts of a list+watch, by resource and reason.",
                                       labels=["resource", "reason"])
        for (resource, reason), n in sorted(self._restarts().items()):
            restarts.add_metric([resource, reason], n)
        yield restarts
        if self._streams is not None:
            s = self._streams()
            yield GaugeMetricFamily("k8s_edge_manager_sync_streams_open",
                                    "Sync streams open (before Hello, live, or replaced and not yet ended).",
                                    value=s["open"])
            yield CounterMetricFamily("k8s_edge_manager_sync_streams_refused",
                                      "Sync streams refused because --max-streams were open.", value=s["refused"])
            yield CounterMetricFamily("k8s_edge_manager_sync_streams_replaced",
                                      "Live sync streams ended by a newer stream of the same node.",
                                      value=s["replaced"])
            yield CounterMetricFamily("k8s_edge_manager_tls_reloads",
                                      "Times the sync server read its changed certificate files again.",
                                      value=s["tls_reloads"])


class _Retention(Collector):
    """How far back the log reaches and whether it takes appends, read at scrape time."""

    def __init__(
        self,
        *,
        first_offset: Callable[[], int],
        oldest_event_time_ns: Callable[[], int | None],
        log_bytes: Callable[[], int],
        store_bytes: Callable[[], int],
        recording: Callable[[], bool],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._first = first_offset
        self._oldest = oldest_event_time_ns
        self._log_bytes = log_bytes
        self._store_bytes = store_bytes
        self._recording = recording
        self._clock = clock_ns

    def collect(self) -> Iterator[Metric]:
        """One sample set per scrape; a closed store yields nothing rather than an error."""
        try:
            first, oldest = self._first(), self._oldest()
            log_bytes, store_bytes = self._log_bytes(), self._store_bytes()
        except Exception:  # the store is closing: skip the samples
            return
        yield GaugeMetricFamily("k8s_edge_manager_log_first_offset",
                                "Offset of the oldest retained event: an agent at or past first_offset - 1 "
                                "resumes, one behind it gets a snapshot.", value=first)
        age = 0.0 if oldest is None else max(0.0, (self._clock() - oldest) / 1e9)
        yield GaugeMetricFamily("k8s_edge_manager_log_retained_seconds",
                                "Age of the oldest retained event: an agent offline for less resumes without a "
                                "snapshot (0 for an empty log).", value=age)
        yield GaugeMetricFamily("k8s_edge_manager_log_bytes", "Bytes of the retained event records (--retain-bytes "
                                "bounds this).", value=log_bytes)
        yield GaugeMetricFamily("k8s_edge_manager_store_bytes", "Bytes the event log's LMDB pages take on disk.",
                                value=store_bytes)
        yield GaugeMetricFamily("k8s_edge_manager_recording", "1 while EdgeNode changes are appended to the log; 0 "
                                "while the store cannot be written (disk full): /readyz says why.",
                                value=1 if self._recording() else 0)


class RoleCollector(Collector):
    """--leader-elect: whether this manager leads, how many terms it began, how far its own log reaches."""

    def __init__(self, *, leading: Callable[[], bool], terms: Callable[[], int], head_offset: Callable[[], int],
                 copies: Callable[[], int]) -> None:
        self._leading = leading
        self._terms = terms
        self._head = head_offset
        self._copies = copies

    def collect(self) -> Iterator[Metric]:
        """Read at scrape time; registered in the standby's registry and in each leader term's."""
        yield GaugeMetricFamily("k8s_edge_manager_leader", "1 while this manager leads (holds the Lease).",
                                value=1 if self._leading() else 0)
        yield CounterMetricFamily("k8s_edge_manager_leader_transitions", "Leader terms this process began.",
                                  value=self._terms())
        try:
            yield GaugeMetricFamily("k8s_edge_manager_follow_head_offset",
                                    "Offset of the newest event in this manager's own log (a standby's copy).",
                                    value=self._head())
        except Exception:  # the store is being replaced by a copy: skip the sample
            pass
        yield CounterMetricFamily("k8s_edge_manager_store_copies",
                                  "Whole-store copies taken from the leader (a standby's log had diverged or "
                                  "fallen behind compaction).", value=self._copies())


class _Replication(Collector):
    """--leader-elect, while leading: the standbys that hold agents back and how far each lags."""

    def __init__(self, *, standbys_in_sync: Callable[[], int], lag: Callable[[], Mapping[str, int]],
                 timeouts: Callable[[], int]) -> None:
        self._in_sync = standbys_in_sync
        self._lag = lag
        self._timeouts = timeouts

    def collect(self) -> Iterator[Metric]:
        """Read at scrape time from the high-water mark."""
        yield GaugeMetricFamily("k8s_edge_manager_standbys_in_sync",
                                "Standbys whose acknowledgements hold agents back (the high-water mark).",
                                value=self._in_sync())
        lag = GaugeMetricFamily("k8s_edge_manager_replication_lag_events",
                                "Events of the leader's log a connected standby does not hold yet.", labels=["standby"])
        for standby, value in sorted(self._lag().items()):
            lag.add_metric([standby], value)
        yield lag
        yield CounterMetricFamily("k8s_edge_manager_standby_timeouts",
                                  "In-sync standbys dropped for acknowledging nothing for --standby-timeout.",
                                  value=self._timeouts())


class Metrics:
    """The manager's counters; a private registry so tests can run several managers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_appended = Counter("k8s_edge_manager_events_appended", "Events appended to the log, by op.",
                                       ["op"], registry=self.registry)
        self.snapshots_sent = Counter("k8s_edge_manager_snapshots_sent", "Snapshots sent to agents, by reason.",
                                      ["reason"], registry=self.registry)
        self.status_writes = Counter("k8s_edge_manager_status_writes", "EdgeNode status writes to the API.",
                                     registry=self.registry)
        self.compacted_events = Counter("k8s_edge_manager_compacted_events", "Events dropped by compaction.",
                                        registry=self.registry)
        self.object_errors = Counter("k8s_edge_manager_object_errors",
                                     "Unexpected failures handling one EdgeNode (each retried alone with backoff).",
                                     registry=self.registry)

    def add_live(self, **callbacks: Callable) -> None:
        """Register the scrape-time gauges (see _Live)."""
        self.registry.register(_Live(**callbacks))

    def add_replication(self, **callbacks: Callable) -> None:
        """Register the scrape-time gauges of the high-water mark (see _Replication)."""
        self.registry.register(_Replication(**callbacks))

    def add_retention(self, **callbacks: Callable) -> None:
        """Register the scrape-time gauges of the log's extent (see _Retention)."""
        self.registry.register(_Retention(**callbacks))


def serve(address: Address, *, metrics: Metrics, ready: Callable[[], bool],
          not_ready_reason: Callable[[], str | None] | None = None) -> HealthServer:
    """Serve /metrics, /healthz and /readyz (edgecommon.serving) from a daemon thread; return the started server.

    /readyz answers 503 when `ready()` is false or `not_ready_reason()` names a reason,
    with the reason in the body.
    """
    def not_ready() -> str | None:
        why = not_ready_reason() if not_ready_reason is not None else None
        return why if why is not None or ready() else "EdgeNodes not listed yet or the sync service not serving"

    server = HealthServer(address, registry=metrics.registry, not_ready=not_ready)
    server.start()
    return server
