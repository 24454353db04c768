"""The whole system for the API-facing benchmarks: control plane, CRD, EdgeNodes, edge-manager, agents.

Used by latency_bench.py and apicost_bench.py. Real processes throughout: etcd and
kube-apiserver (tools.controlplane.ControlPlane), `edge-manager`, N `edge-agent`
processes, and one bench/agent_load.py process simulating the remaining agents with the
real SyncClient, ReplicaStore and ManifestReconciler (100 Python agent processes would
not fit 2 cores next to everything else). Every agent writes its node's manifests into
<workdir>/files/<node>/. With `kubelets=K`, the first K real agents' nodes also run a hollow
kubelet (kubemark, tools/hollow_kubelet.py) reading that folder as its static-pod folder.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import PYTHON, REPO, Child, _die_with_parent, python_child, wait_for  # noqa: E402
from tools.controlplane import ControlPlane, free_port, wait_established  # noqa: E402

NAMESPACE = "bench"
BIN = Path(PYTHON).parent  # the console scripts pip installed next to this Python
REV_LABEL = "bench-rev"


def node_name(i: int) -> str:
    return f"lat{i:05d}"


def edgenode(node: str, *, pods: int, rev: int) -> dict[str, Any]:
    """An EdgeNode with `pods` small pods; pod p0 carries the revision label the benchmarks change."""
    return {
        "apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": node, "namespace": NAMESPACE},
        "spec": {"pods": [{
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{j}", "labels": {REV_LABEL: f"r{rev}" if j == 0 else "r0", "app": f"p{j}"}},
            "spec": {"containers": [{"name": "c", "image": f"registry.example.com/app{j}:1.0",
                                     "ports": [{"containerPort": 8080}]}]},
        } for j in range(pods)]},
    }


def manifest_path(files: Path, node: str, pod: str) -> Path:
    return files / node / f"k8s-edge_{NAMESPACE}_{pod}.json"


class EdgeCluster:
    """Start everything in order; stop everything in reverse (process groups, die-with-parent)."""

    def __init__(self, workdir: Path, *, nodes: int, real_agents: int, pods: int,
                 extra_apiserver_args: tuple[str, ...] = (), kubelets: int = 0) -> None:
        self.workdir = workdir
        self.nodes = [node_name(i) for i in range(nodes)]
        self.real_agents = real_agents
        self.kubelet_nodes = self.nodes[:min(kubelets, real_agents)]
        self.pods = pods
        self.files = workdir / "files"
        self.cp = ControlPlane(workdir / "cp", extra_apiserver_args=list(extra_apiserver_args))
        self.manager: subprocess.Popen | None = None
        self.agents: list[subprocess.Popen] = []
        self.load: Child | None = None
        self.sync_port = 0

    def __enter__(self) -> EdgeCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubectl_cmd(self, *args: str) -> list[str]:
        return [str(self.cp.kubectl_path), "--kubeconfig", str(self.cp.kubeconfig), *args]

    def start(self) -> None:
        self.cp.start()
        self.cp.kubectl("apply", "-f", str(REPO / "crd" / "edgenode.yaml"))
        wait_established(self.cp.kubectl)
        self.cp.kubectl("create", "namespace", NAMESPACE)
        for node in self.kubelet_nodes:  # before the agents, so every manifest lands in a kubelet's folder
            self.cp.start_hollow_kubelet(node, static_pod_dir=self.files / node)
        items = [edgenode(n, pods=self.pods, rev=0) for n in self.nodes]
        self.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                        timeout=300)
        self.sync_port = free_port()
        self.manager = self._popen("edge-manager", [
            str(BIN / "edge-manager"), "--kubeconfig", str(self.cp.kubeconfig), "--namespace", NAMESPACE,
            "--sync-server", f"127.0.0.1:{self.sync_port}", "--data-dir", str(self.workdir / "manager"),
            "--insecure", "--metrics-addr", "", "--log-level", "WARNING"])
        wait_for(self._sync_port_open, timeout=120, what="edge-manager's sync port", interval=0.2)
        for node in self.nodes[: self.real_agents]:
            (self.files / node).mkdir(parents=True, exist_ok=True)
            self.agents.append(self._popen(f"edge-agent-{node}", [
                str(BIN / "edge-agent"), "--node-name", node, "--sync-server", f"127.0.0.1:{self.sync_port}",
                "--pod-manifest-path", str(self.files / node), "--data-dir", str(self.workdir / "agents" / node),
                "--insecure", "--log-level", "warning"]))
        simulated = len(self.nodes) - self.real_agents
        if simulated:
            self.load = python_child("agent_load", "agent_load.py", "--addr", f"127.0.0.1:{self.sync_port}",
                                     "--nodes", f"lat:{self.real_agents}:{simulated}",
                                     "--replicas", str(self.workdir / "load-replicas"), "--files", str(self.files),
                                     log_path=self.workdir / "agent_load.log")
            self.load.recv(timeout=120)
            self.load.call("start")
        wait_for(self._all_written, timeout=300, what="every node's manifests", interval=0.2)

    def _sync_port_open(self) -> bool:
        if self.manager is not None and self.manager.poll() is not None:
            raise RuntimeError(f"edge-manager exited with {self.manager.returncode}: see {self.workdir}/edge-manager.log")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.sync_port)) == 0

    def _all_written(self) -> bool:
        return all(manifest_path(self.files, n, f"p{self.pods - 1}").exists() for n in self.nodes)

    def _popen(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()

    def stop(self) -> None:
        procs = [p for p in (*self.agents, self.manager) if p is not None]
        if self.load is not None:
            self.load.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.cp.stop()
