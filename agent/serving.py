"""The agent's HTTP side: Prometheus /metrics, /healthz and /readyz.

Owns the metrics names and the little HTTP server (a daemon thread, so a slow
scraper never blocks the sync loop). Values are read at scrape time from the
objects that own them (sync client, replica, reconciler), so nothing is
counted twice. Must not import manager.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.reconciling import ManifestReconciler
from agent.sync_client import SyncProgress
from eventlog import ReplicaStore

PREFIX = "k8s_edge_agent_"


@dataclass(slots=True)
class Readiness:
    """What /readyz answers: the replica is open and the manifest folder was reconciled once."""

    replica_open: bool = False

    def check(self, reconciler: ManifestReconciler | None) -> tuple[bool, str]:
        """(ready, why)."""
        if not self.replica_open:
            return False, "replica not open"
        last = reconciler.stats.last if reconciler else None
        if last is None:
            return False, "waiting for the first reconcile (a never-synced replica waits for its first snapshot)"
        if not reconciler.stats.first_ok:
            return False, f"manifests not reconciled yet: {last.message}"
        return True, "ok"


class AgentCollector:
    """Exposes the agent's state as Prometheus metrics, read when scraped."""

    def __init__(self, *, node: str, replica: ReplicaStore, reconciler: ManifestReconciler,
                 client: Callable[[], SyncProgress | None]) -> None:
        self.node = node
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
        s = self.reconciler.stats
        r = CounterMetricFamily(PREFIX + "reconciles", "Manifest folder reconciles, by kind.", labels=["node", "kind"])
        r.add_metric([self.node, "full"], s.full)
        r.add_metric([self.node, "changes"], s.incremental)
        yield r
        yield counter("manifest_writes", "Manifest files written.", s.written)
        yield counter("manifest_removals", "Manifest files removed.", s.removed)
        yield counter("manifest_write_errors", "Manifest writes or removals that failed.", s.write_errors)
        yield gauge("managed_manifests", "Manifest files the agent manages now.", self.reconciler.managed)
        yield gauge("manifests_ok", "1 when the last reconcile left the folder equal to the replica.",
                    1 if s.last is not None and s.last.ok else 0)


class HealthServer:
    """Serves /metrics, /healthz and /readyz from a daemon thread."""

    def __init__(self, host: str, port: int, *, registry: CollectorRegistry,
                 ready: Callable[[], tuple[bool, str]]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok, why = outer.ready()
                    self._send(200 if ok else 503, (why + "\n").encode())
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                logger.trace("metrics http: {}", format % args)

        self.registry = registry
        self.ready = ready
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.address: tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        """Begin serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
