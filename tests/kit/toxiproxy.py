"""Toxiproxy for the end-to-end tests: the server as a process and a small client for its HTTP API.

Owns the fault-injecting TCP proxies between agents and the manager. Imports only the
standard library (and the harness's process helpers), never manager or agent code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.kit.processes import Daemon, free_port
from tests.kit.waits import wait_for


REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "build-toxiproxy.sh"


class ToxiproxyError(RuntimeError):
    """The Toxiproxy API answered with an error."""


# Toxiproxy's API can block for good while it removes a toxic from a link stuck writing to a
# stalled connection (Shopify/toxiproxy#558, #412, still open in v2.12.0). A heal that hits it
# restarts the server and puts back every proxy and every other toxic exactly as recorded.
HUNG_API = (TimeoutError, urllib.error.URLError, ConnectionError)


def build_toxiproxy() -> Path:
    """Run tools/build-toxiproxy.sh (a fast no-op when cached); return the server binary."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


class ToxiproxyServer:
    """A toxiproxy-server process on a free loopback port, and its API."""

    def __init__(self, binary: Path, *, log_dir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.daemon = Daemon(
            "toxiproxy", [str(binary), "-host", "127.0.0.1", "-port", str(self.port)],
            log_path=log_dir / "toxiproxy.log", env={**os.environ, "LOG_LEVEL": "warn"},
        )
        self.proxies: dict[str, Proxy] = {}
        self.restarts = 0

    def restart(self) -> None:
        """Kill the server, start it on the same port, and recreate every proxy as recorded.

        Every connection through every proxy is reset by this (clients reconnect); the
        proxies keep their listen addresses, toxics and enabled state.
        """
        self.restarts += 1
        print(f"[e2e] toxiproxy API hung (Shopify/toxiproxy#558): restart {self.restarts}", file=sys.stderr)
        self.daemon.kill()
        self.start()
        for proxy in self.proxies.values():
            self.request("POST", "/proxies", {"name": proxy.name, "listen": proxy.listen,
                                              "upstream": proxy.upstream, "enabled": proxy.enabled})
            for body in proxy.recorded.values():
                self.request("POST", f"/proxies/{proxy.name}/toxics", body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ToxiproxyServer:
        """Start the server and wait until its API answers."""
        self.daemon.start()
        wait_for(lambda: self._ping(), timeout=20, max_interval=1.0, what="toxiproxy API",
                 on_timeout=self.daemon.log_tail)
        return self

    def stop(self) -> None:
        """Kill the server (its proxies go with it)."""
        self.daemon.kill()

    def _ping(self) -> bool:
        self.daemon.check_alive()
        try:
            self.request("GET", "/version")
            return True
        except (OSError, ToxiproxyError):
            return False

    def request(self, method: str, path: str, body: dict | None = None) -> dict | list | None:
        """One API call; raises ToxiproxyError on an HTTP error status."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise ToxiproxyError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def delete_proxy(self, name: str) -> None:
        """Forget a proxy (a finished test's); a server that is gone or hung is fine here."""
        self.proxies.pop(name, None)
        try:
            self.request("DELETE", f"/proxies/{name}")
        except (*HUNG_API, ToxiproxyError):
            pass

    def create_proxy(self, name: str, *, upstream: str) -> Proxy:
        """A proxy listening on a free loopback port, forwarding to upstream."""
        listen = f"127.0.0.1:{free_port()}"
        out = self.request("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                                "enabled": True})
        assert isinstance(out, dict)
        proxy = self.proxies[name] = Proxy(self, name, out.get("listen", listen), upstream)
        return proxy


@dataclass
class Proxy:
    """One proxy between an agent and the manager, and the faults it can inject."""

    server: ToxiproxyServer
    name: str
    listen: str
    upstream: str
    enabled: bool = True
    recorded: dict[str, dict] = field(default_factory=dict)  # toxic name -> the body that added it

    def add_toxic(self, kind: str, *, stream: str = "downstream", name: str | None = None,
                  toxicity: float = 1.0, **attributes: int | float) -> str:
        """Add a toxic ('reset_peer', 'timeout', 'latency', 'bandwidth', ...); return its name."""
        toxic = name or f"{kind}_{stream}"
        body = {"name": toxic, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        self.recorded[toxic] = body
        try:
            self.server.request("POST", f"/proxies/{self.name}/toxics", body)
        except ToxiproxyError as e:
            if " 409 " not in str(e):
                raise
            self.server.request("POST", f"/proxies/{self.name}/toxics/{toxic}", body)  # already there: update it
        return toxic

    def remove_toxic(self, toxic: str) -> None:
        """Remove one toxic; missing is fine (heal is idempotent)."""
        self.recorded.pop(toxic, None)
        try:
            self.server.request("DELETE", f"/proxies/{self.name}/toxics/{toxic}")
        except ToxiproxyError as e:
            if " 404 " not in str(e):
                raise

    def toxics(self) -> list[str]:
        """Names of the toxics in place."""
        out = self.server.request("GET", f"/proxies/{self.name}/toxics") or []
        return [t["name"] for t in out]  # type: ignore[index, union-attr]

    def clear(self) -> None:
        """Remove every toxic and enable the proxy: the network is healthy again."""
        try:
            for t in self.toxics():
                self.remove_toxic(t)
            self.set_enabled(True)
        except (*HUNG_API, ToxiproxyError) as exc:
            if isinstance(exc, ToxiproxyError) and " 503 " not in str(exc):  # 503: its own lock timeout
                raise
            self.recorded.clear()
            self.enabled = True
            self.server.restart()

    def set_upstream(self, upstream: str) -> None:
        """Forward new connections elsewhere (a Service whose selected pod changed); open ones stay."""
        self.upstream = upstream
        self.server.request("POST", f"/proxies/{self.name}", {"upstream": upstream, "enabled": self.enabled})

    def set_enabled(self, enabled: bool) -> None:
        """Disable: close every connection and refuse new ones (a clean partition); enable: heal."""
        self.enabled = enabled
        self.server.request("POST", f"/proxies/{self.name}", {"enabled": enabled})

    # -- the faults, by name ------------------------------------------------------------

    def reset_connections(self) -> None:
        """Connection reset: every connection is reset (RST) as soon as data flows, both ways."""
        self.add_toxic("reset_peer", stream="downstream", timeout=0)
        self.add_toxic("reset_peer", stream="upstream", timeout=0)

    def black_hole(self) -> None:
        """Black hole: data is dropped both ways and nothing is closed; only keepalive can tell."""
        self.add_toxic("timeout", stream="downstream", timeout=0)
        self.add_toxic("timeout", stream="upstream", timeout=0)

    def slow(self, *, latency_ms: int = 300, jitter_ms: int = 100) -> None:
        """Added latency both ways."""
        self.add_toxic("latency", stream="downstream", latency=latency_ms, jitter=jitter_ms)
        self.add_toxic("latency", stream="upstream", latency=latency_ms, jitter=jitter_ms)

    def narrow(self, *, rate_kb: int = 8) -> None:
        """Bandwidth limit (KB/s) both ways."""
        self.add_toxic("bandwidth", stream="downstream", rate=rate_kb)
        self.add_toxic("bandwidth", stream="upstream", rate=rate_kb)
