"""Prometheus metrics and the /healthz and /readyz endpoints of edge-manager.

Owns the metric names and the small HTTP server that serves them (a thread, so a busy
event loop never makes probes fail). Values that already live elsewhere (head offset,
agents, lag, watch restarts) are read at scrape time through callbacks instead of being
copied on every change. Imports neither grpc nor the kubernetes client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


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
            yield GaugeMetricFamily("edge_manager_head_offset", "Offset of the newest event in the log.",
                                    value=self._head())
        except Exception:  # the store is closing: skip the sample
            pass
        yield GaugeMetricFamily("edge_manager_connected_agents", "Agent streams currently open.",
                                value=self._agents())
        lag = GaugeMetricFamily("edge_manager_node_lag_events",
                                "Events of the node the agent has not acknowledged (headOffset - syncedOffset).",
                                labels=["node"])
        for node, value in sorted(self._lag().items()):
            lag.add_metric([node], value)
        yield lag
        restarts = CounterMetricFamily("edge_manager_watch_restarts",
                                       "Restarts of a list+watch, by resource and reason.",
                                       labels=["resource", "reason"])
        for (resource, reason), n in sorted(self._restarts().items()):
            restarts.add_metric([resource, reason], n)
        yield restarts
        if self._streams is not None:
            s = self._streams()
            yield GaugeMetricFamily("edge_manager_sync_streams_open",
                                    "Sync streams open (before Hello, live, or replaced and not yet ended).",
                                    value=s["open"])
            yield CounterMetricFamily("edge_manager_sync_streams_refused",
                                      "Sync streams refused because --max-streams were open.", value=s["refused"])
            yield CounterMetricFamily("edge_manager_sync_streams_replaced",
                                      "Live sync streams ended by a newer stream of the same node.",
                                      value=s["replaced"])
            yield CounterMetricFamily("edge_manager_tls_reloads",
                                      "Times the sync server read its changed certificate files again.",
                                      value=s["tls_reloads"])


class Metrics:
    """The manager's counters; a private registry so tests can run several managers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_appended = Counter("edge_manager_events_appended", "Events appended to the log, by op.",
                                       ["op"], registry=self.registry)
        self.snapshots_sent = Counter("edge_manager_snapshots_sent", "Snapshots sent to agents, by reason.",
                                      ["reason"], registry=self.registry)
        self.status_writes = Counter("edge_manager_status_writes", "EdgeNode status writes to the API.",
                                     registry=self.registry)
        self.compacted_events = Counter("edge_manager_compacted_events", "Events dropped by compaction.",
                                        registry=self.registry)
        self.object_errors = Counter("edge_manager_object_errors",
                                     "Unexpected failures handling one EdgeNode (each retried alone with backoff).",
                                     registry=self.registry)

    def add_live(self, **callbacks: Callable) -> None:
        """Register the scrape-time gauges (see _Live)."""
        self.registry.register(_Live(**callbacks))


def serve(address: tuple[str, int], *, metrics: Metrics, ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz from a daemon thread; return the bound server."""
    registry = metrics.registry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok = ready()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line
            pass

    server = ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("serving metrics, /healthz and /readyz on {}:{}", *server.server_address[:2])
    return server
