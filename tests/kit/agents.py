"""edge-agent for tests: the agent as a real process with its folders and metrics, replicas on real folders."""

from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

from eventlog import PodEntry, ReplicaStore, Snapshot, digest_of
from tests.kit.manifests import managed_files, put_foreign
from tests.kit.processes import AGENT, REPO, Daemon, free_port
from tests.kit.waits import http_get, wait_for, wait_ready


def make_replica(path: Path, *, node: str, pods: dict[tuple[str, str], bytes], log_id: str = "a" * 32,
                 offset: int | None = None) -> None:
    """A replica on disk holding exactly these pods, as if a snapshot had been installed."""
    entries = tuple(sorted((PodEntry(ns, n, i + 1, m) for i, ((ns, n), m) in enumerate(sorted(pods.items()))),
                           key=lambda p: p.key))
    with ReplicaStore(path, node=node) as r:
        r.install_snapshot(Snapshot(log_id, node, offset if offset is not None else len(entries),
                                    digest_of(entries), entries))


class AgentProc(Daemon):
    """An edge-agent process with its folders, metrics port and helpers to read its state."""

    def __init__(self, tmp: Path, name: str, *, node: str, servers: list[str], extra: list[str] = (),
                 env: dict[str, str] | None = None, resync: str = "1s", insecure: bool = True) -> None:
        self.node = node
        self.data_dir = tmp / f"{name}-data"
        self.manifests = tmp / f"{name}-manifests"
        self.manifests.mkdir(exist_ok=True)
        self.foreign = put_foreign(self.manifests)  # checked after every test (conftest): never touched
        self.check_foreign = True
        self.metrics_port = free_port()
        cmd = [*AGENT, "--node-name", node, "--data-dir", str(self.data_dir), "--pod-manifest-path",
               str(self.manifests), "--resync-interval", resync, *(["--insecure"] if insecure else []),
               "--log-level", "debug",
               "--metrics-addr", f"127.0.0.1:{self.metrics_port}", *extra]
        for s in servers:
            cmd += ["--sync-server", s]
        super().__init__(name, cmd, log_path=tmp / f"{name}.log", env={**os.environ, **(env or {})}, cwd=REPO,
                         deathsig=False)

    def set_env(self, **kv: str | None) -> None:
        """Change the environment of the next start (None removes a variable)."""
        assert self.env is not None
        for k, v in kv.items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v

    def metrics(self) -> dict[str, float]:
        """The agent's Prometheus samples, by name with labels."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                name, _, labels = k.partition("{")
                pairs = [f'{a}="{b}"' for a, b in re.findall(r'(\w+)="([^"]*)"', labels) if a != "node"]
                out[name + ("{" + ",".join(pairs) + "}" if pairs else "")] = float(v)
        return out

    def http(self, path: str) -> tuple[int, str]:
        """(status, body) of a path of its metrics server."""
        return http_get(self.metrics_port, path, timeout=5)

    def replica(self) -> ReplicaStore:
        """The agent's replica, read-only (LMDB readers never block the agent)."""
        return ReplicaStore(self.data_dir / "replica", readonly=True)

    def wait_ready(self, *, timeout: float = 60) -> None:
        """Until /readyz answers 200 (replica open, manifest folder reconciled once)."""
        wait_ready(self.metrics_port, alive=self.check_alive, what=self.name, timeout=timeout,
                   on_timeout=self.log_tail)

    def wait_serving(self, *, timeout: float = 60) -> None:
        """Until /healthz answers 200: data dir locked, replica open (a never-synced agent is not ready yet)."""
        def serving() -> bool:
            self.check_alive()
            return http_get(self.metrics_port, "/healthz", timeout=5)[0] == 200

        wait_for(serving, timeout, f"{self.name} to answer /healthz 200", on_timeout=self.log_tail)

    def wait_log(self, text: str, *, timeout: float = 60, count: int = 1) -> None:
        def seen() -> bool:
            if self.log().count(text) >= count:
                return True
            self.check_alive()
            return False

        wait_for(seen, timeout=timeout, what=f"{self.name} to log {text!r}", on_timeout=self.log_tail)

    def wait_applied(self, offset: int, *, timeout: float = 60) -> None:
        """Until the agent's metrics say it applied this offset."""
        wait_for(lambda: self.check_alive() or self.metrics()["k8s_edge_agent_applied_offset"] == offset,
                 timeout=timeout, what=f"{self.name} to apply offset {offset}", on_timeout=self.log_tail)

    def wait_files(self, files: dict[str, bytes], *, timeout: float = 60) -> None:
        """Until the managed files are exactly these."""
        def same() -> bool:
            self.check_alive()
            return managed_files(self.manifests) == files

        wait_for(same, timeout=timeout, what=f"{self.name}'s manifests to equal {sorted(files)}",
                 on_timeout=lambda: f"have {sorted(managed_files(self.manifests))}\n{self.log_tail()}")


def journal_kinds(replica: ReplicaStore) -> tuple[list[int], list[int]]:
    """(snapshot offsets, event offsets) in journal order."""
    snaps, events = [], []
    for j in replica.journal():
        if j.event is not None:
            events.append(j.event.offset)
        else:
            snaps.append(j.snapshot_offset)
    return snaps, events
