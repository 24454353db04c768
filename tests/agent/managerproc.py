"""The real edge-manager as a process for agent tests: fixed ports, so a restarted manager is found at the same address.

Tests only. Runs `.venv/bin/edge-manager` against the session's apiserver, limited to the
test's namespace so tests sharing the apiserver never see each other's EdgeNodes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from eventlog import LogStore
from tests.agent.agentproc import SpawnedDaemon
from tests.e2e.processes import free_port, wait_for

EDGE_MANAGER = Path(sys.executable).parent / "edge-manager"


class ManagerProc(SpawnedDaemon):
    """edge-manager on fixed loopback ports, restartable."""

    def __init__(self, tmp: Path, *, kubeconfig: Path, namespace: str, extra: list[str] = (),
                 insecure: bool = True) -> None:
        self.data_dir = tmp / "manager-data"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [str(EDGE_MANAGER), "--kubeconfig", str(kubeconfig), "--data-dir", str(self.data_dir),
               "--namespace", namespace, "--sync-server", self.address, "--metrics-addr", "",
               *(["--insecure"] if insecure else []), "--heartbeat-interval", "1s", "--log-level", "DEBUG", *extra]
        super().__init__("edge-manager", cmd, log_path=tmp / "manager.log", env=dict(os.environ))

    def start_and_wait(self) -> ManagerProc:
        """Start and wait until EdgeNodes are listed and recorded."""
        before = self.log_path.read_text(errors="replace").count("Starting workers") if self.log_path.exists() else 0
        self.start()

        def started() -> bool:
            self.check_alive()
            return self.log_path.read_text(errors="replace").count("Starting workers") > before

        wait_for(started, timeout=90, what="edge-manager to list EdgeNodes", on_timeout=self.log_tail)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def store(self) -> LogStore:
        """The manager's log, read-only (readers never block the manager)."""
        return LogStore(self.data_dir / "eventlog", readonly=True)

    def desired(self, node: str) -> dict[tuple[str, str], bytes]:
        with self.store() as s:
            return {k: p.manifest for k, p in s.pods(node).items()}

    def head(self, node: str) -> int:
        with self.store() as s:
            st = s.node_state(node)
            return st.head_offset if st else 0

    def node_events(self, node: str, *, after: int) -> list[int]:
        with self.store() as s:
            return [e.offset for e in s.read_node(node, after=after, limit=1_000_000)]
