"""edge-manager as a real process for tests, and its store read from outside.

- ``ManagerProcess``: `.venv/bin/edge-manager` in its own process group, restartable with the
  same command line (a fixed sync port finds a restarted manager at the same address);
  ``wait_ready()`` polls /readyz (EdgeNodes listed, agents served) and, for a sync port 0,
  reads the bound port from the log.
- ``events(data_dir)`` / ``ops(events)``: the manager's log, read through a read-only LogStore.
- ``sample(metrics, name)``: one value of a /metrics text.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from eventlog import Event, LogStore
from tests.kit.processes import EDGE_MANAGER, REPO, Daemon, free_port
from tests.kit.waits import http_get, wait_ready

_SYNC_PORT = re.compile(r"listening on \S*:(\d+) \(")


def sample(metrics: str, name: str) -> float | None:
    """The value of one Prometheus sample (name with its labels, as exposed) in a /metrics text; None if absent."""
    m = re.search(r"^%s (\S+)$" % re.escape(name), metrics, re.M)
    return float(m.group(1)) if m else None


def events(data_dir: Path, after: int = 0) -> list[Event]:
    """The manager's events, read-only (LMDB readers never block the manager)."""
    store_dir = Path(data_dir) / "eventlog"
    if not (store_dir / "data.mdb").exists():
        return []
    with LogStore(store_dir, readonly=True) as s:
        return list(s.iter_events(after=after))


def ops(evs: list[Event]) -> list[tuple[str, str, str]]:
    """(node, op, pod name) of each event: what the tests compare."""
    return [(e.node, e.op, e.name) for e in evs]


class ManagerProcess(Daemon):
    """One edge-manager process; metrics on a free loopback port so /readyz tells when it is ready."""

    def __init__(self, *, kubeconfig: Path | str, data_dir: Path, log_path: Path, namespace: str | None = None,
                 sync_address: str = "127.0.0.1:0", insecure: bool = True, args: list[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.metrics_port = free_port()
        host, _, port = sync_address.rpartition(":")
        self.sync_port = int(port)
        self._sync_host = host
        cmd = [str(EDGE_MANAGER), "--kubeconfig", str(kubeconfig), "--data-dir", str(self.data_dir),
               "--sync-server", sync_address, "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
               "--log-level", "DEBUG"]
        if insecure:
            cmd.append("--insecure")
        if namespace:
            cmd += ["--namespace", namespace]
        cmd += list(args)
        # no deathsig: tests that run one may host a gRPC server; no header: --log-format json tests parse the log
        super().__init__("edge-manager", cmd, log_path=log_path, env=dict(os.environ), cwd=REPO,
                         deathsig=False, header=False)

    @property
    def address(self) -> str:
        """host:port agents connect to."""
        return f"127.0.0.1:{self.sync_port}"

    def wait_ready(self, timeout: float = 90.0) -> ManagerProcess:
        """Until /readyz answers 200 (EdgeNodes listed, agents served); then the bound sync port is known."""
        wait_ready(self.metrics_port, alive=self.check_alive, what="edge-manager", timeout=timeout,
                   on_timeout=self.log_tail)
        if self.cmd[self.cmd.index("--sync-server") + 1].endswith(":0"):
            self.sync_port = int(_SYNC_PORT.findall(self.log())[-1])
        return self

    def metrics(self) -> str:
        """The /metrics text."""
        status, body = http_get(self.metrics_port, "/metrics")
        assert status == 200, (status, body)
        return body

    def get(self, path: str) -> int:
        """HTTP status of a probe path."""
        return http_get(self.metrics_port, path)[0]

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the manager."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (after SIGCONT, if a test stopped it), wait, return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def store(self) -> LogStore:
        """The manager's log, read-only (readers never block the manager)."""
        return LogStore(self.data_dir / "eventlog", readonly=True)

    def desired(self, node: str) -> dict[tuple[str, str], bytes]:
        """The node's pods in the manager's view."""
        with self.store() as s:
            return {k: p.manifest for k, p in s.pods(node).items()}

    def head(self, node: str) -> int:
        """The node's head offset."""
        with self.store() as s:
            st = s.node_state(node)
            return st.head_offset if st else 0

    def node_events(self, node: str, *, after: int) -> list[int]:
        """Offsets of the node's events after an offset."""
        with self.store() as s:
            return [e.offset for e in s.read_node(node, after=after, limit=1_000_000)]
