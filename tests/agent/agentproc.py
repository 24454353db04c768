"""Helpers for the edge-agent tests: agents as real processes, replicas and manifests on real folders."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from eventlog import PodEntry, ReplicaStore, Snapshot, canonical_manifest, digest_of
from tests.e2e.processes import Daemon, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "agent.main"]


def pod_manifest(ns: str, name: str, image: str = "nginx:1.25") -> bytes:
    """Canonical JSON of a small static pod."""
    return canonical_manifest({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": image}]},
    })


def make_replica(path: Path, *, node: str, pods: dict[tuple[str, str], bytes], log_id: str = "a" * 32,
                 offset: int | None = None) -> None:
    """A replica on disk holding exactly these pods, as if a snapshot had been installed."""
    entries = tuple(sorted((PodEntry(ns, n, i + 1, m) for i, ((ns, n), m) in enumerate(sorted(pods.items()))),
                           key=lambda p: p.key))
    with ReplicaStore(path, node=node) as r:
        r.install_snapshot(Snapshot(log_id, node, offset if offset is not None else len(entries),
                                    digest_of(entries), entries))


def managed_files(folder: Path) -> dict[str, bytes]:
    """The agent's files in a manifest folder (by its naming scheme)."""
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if re.fullmatch(r"k8s-edge_[^_/]+_[^_/]+\.json", p.name)}


def expected_files(pods: dict[tuple[str, str], bytes]) -> dict[str, bytes]:
    """What managed_files should be for these desired pods."""
    return {f"k8s-edge_{ns}_{n}.json": m for (ns, n), m in pods.items()}


FOREIGN = {"kube-apiserver.yaml": b"apiVersion: v1\nkind: Pod\n", "nginx.json": b'{"kind":"Pod"}',
           ".hidden": b"x", "k8s-edge-notours.json": b"{}"}


def put_foreign(folder: Path) -> dict[str, bytes]:
    """Files an operator put in the manifest folder; the agent must never touch them."""
    for n, data in FOREIGN.items():
        (folder / n).write_bytes(data)
    return dict(FOREIGN)


def foreign_files(folder: Path) -> dict[str, bytes]:
    """The foreign files as they are now."""
    return {n: (folder / n).read_bytes() for n in FOREIGN if (folder / n).exists()}


def run_agent(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run edge-agent to completion (for the start-up refusals)."""
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def error_lines(text: str) -> list[str]:
    """Lines a user would read as errors."""
    return [l for l in text.splitlines() if " ERROR " in l or "error:" in l]


class SpawnedDaemon(Daemon):
    """A Daemon started without preexec_fn, so Python spawns it with vfork and runs no fork handlers.

    The test process may host a gRPC server (syncserver.py): a plain fork() runs gRPC's atfork
    handlers in the child, which can abort it (SIGABRT, "epoll_wait error: Bad file descriptor")
    before exec. Finalizers kill the process groups instead of PR_SET_PDEATHSIG.
    """

    def start(self) -> Daemon:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=self.cwd, start_new_session=True)
        self.starts += 1
        return self


class AgentProc(SpawnedDaemon):
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
        super().__init__(name, cmd, log_path=tmp / f"{name}.log", env={**os.environ, **(env or {})}, cwd=REPO)

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
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def replica(self) -> ReplicaStore:
        """The agent's replica, read-only (LMDB readers never block the agent)."""
        return ReplicaStore(self.data_dir / "replica", readonly=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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
