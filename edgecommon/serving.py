"""The small HTTP server of both daemons: Prometheus `/metrics`, `/healthz` and `/readyz`.

A daemon thread, so a busy event loop or a slow scrape never makes a probe fail or blocks
the daemon. What is collected and what "ready" means belong to each daemon; this module
only serves them. Imports nothing of the project.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from edgecommon.addresses import Address

NotReadyReason = Callable[[], str | None]
"""Why the daemon is not ready, in a few words; None when it is."""


class HealthServer:
    """Serves /metrics from `registry`, /healthz (alive: always ok) and /readyz (503 with the reason)."""

    def __init__(self, address: Address, *, registry: CollectorRegistry, not_ready: NotReadyReason) -> None:
        """Bind `address` (raises OSError: in use, not local); serving starts with start()."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    why = server.not_ready()
                    self._send(200, b"ok\n") if why is None else self._send(503, f"not ready: {why}\n".encode())
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (scrapes are not worth a line)
                logger.trace("metrics http: {}", format % args)

        self.registry = registry
        self.not_ready = not_ready
        self._httpd = ThreadingHTTPServer((address.bind_host(), address.port), Handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.address = Address(str(host), int(port))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        """Begin serving; one log line says where (tests read the port from it)."""
        self._thread.start()
        logger.info("serving metrics, /healthz and /readyz on {}", self.address)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
