"""The whole system for the API-facing benchmarks: control plane, CRD, EdgeNodes, edge-manager(s), agents.

Used by latency_bench.py and apicost_bench.py. Real processes throughout: etcd and
kube-apiserver (tools.controlplane.ControlPlane), `edge-manager`, N `edge-agent`
processes, and one bench/agent_load.py process simulating the remaining agents with the
real SyncClient, ReplicaStore and ManifestReconciler (100 Python agent processes would
not fit 2 cores next to everything else). Every agent writes its node's manifests into
<workdir>/files/<node>/. With `kubelets=K`, the first K real agents' nodes also run a hollow
kubelet (kubemark, tools/hollow_kubelet.py) reading that folder as its static-pod folder.

HaCluster (failover_bench.py, takeover_bench.py): the same control plane and EdgeNodes with
two or more `edge-manager --leader-elect` processes, each with its own data dir and ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
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


# -- several managers with --leader-elect (the HA benchmarks) -------------------------

LEASE_NAME = "edge-manager"  # --leader-elect-resource-name's default


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseTimings:
    """The three client-go lease durations, in seconds, as passed to every manager."""

    lease_duration: float
    renew_deadline: float
    retry_period: float

    def flags(self) -> list[str]:
        """The edge-manager flags that set them."""
        return ["--leader-elect-lease-duration", f"{self.lease_duration:g}s",
                "--leader-elect-renew-deadline", f"{self.renew_deadline:g}s",
                "--leader-elect-retry-period", f"{self.retry_period:g}s"]

    def __str__(self) -> str:
        return f"lease {self.lease_duration:g} s / renew {self.renew_deadline:g} s / retry {self.retry_period:g} s"


# client-go's (and kube-controller-manager's) defaults, the manager's defaults too
DEFAULT_TIMINGS = LeaseTimings(lease_duration=15, renew_deadline=10, retry_period=2)
# What the failover benchmark passes: kill -> acquire is lease_duration plus up to 2 x 1.2 retry
# periods (the standby sees the last renew up to one jittered retry late, takes the lease once it has
# seen it unchanged that long, at its next retry), so 8 s leaves ~5 s of the 15 s target for the
# takeover and the agents; renew 6 s keeps a 2 s gap between a cut-off leader's fence and the
# earliest takeover; retry 1 s (each step costs up to 1.2 retries of jitter) gives 6 renew tries.
FAST_TIMINGS = LeaseTimings(lease_duration=8, renew_deadline=6, retry_period=1)


@dataclass
class ManagerProc:
    """One edge-manager of an HaCluster: its process, ports, identity and data dir."""

    index: int
    identity: str
    sync_port: int
    metrics_port: int
    data_dir: Path
    proc: subprocess.Popen | None = None

    @property
    def sync_address(self) -> str:
        return f"127.0.0.1:{self.sync_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {'name{labels}': value} (labels as printed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    """The sum of a metric over all its label sets (0 when absent)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def metric_by_label(metrics: dict[str, float], name: str) -> dict[str, float]:
    """{labels: value} of one metric, for reporting counters by reason."""
    return {k[len(name):] or "{}": v for k, v in metrics.items() if k == name or k.startswith(name + "{")}


class HaCluster:
    """A control plane, N EdgeNodes and `managers` edge-managers with --leader-elect on loopback.

    Each manager has its own data dir, sync port (also its --advertise-address) and metrics
    port (/metrics, /readyz); the bench reads roles from the Lease, readiness from /readyz and
    offsets from /metrics, and kills a manager with SIGKILL to its process group.
    """

    def __init__(self, workdir: Path, *, nodes: int, pods: int, timings: LeaseTimings, managers: int = 2,
                 prefix: str = "ha", extra_flags: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.nodes = [f"{prefix}{i:05d}" for i in range(nodes)]
        self.pods = pods
        self.timings = timings
        self.extra_flags = extra_flags
        self.cp = ControlPlane(workdir / "cp")
        self.managers = [ManagerProc(index=i, identity=f"bench-m{i}", sync_port=free_port(), metrics_port=free_port(),
                                     data_dir=workdir / f"manager{i}") for i in range(managers)]
        self._leases: Any = None
        self.edgenodes_seconds = 0.0  # how long creating the EdgeNodes took
        self.managers_started_at = 0.0  # time.monotonic() when the managers were started

    def __enter__(self) -> HaCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start and stop ----------------------------------------------------------------

    def start(self) -> None:
        self.cp.start()
        self.cp.kubectl("apply", "-f", str(REPO / "crd" / "edgenode.yaml"))
        wait_established(self.cp.kubectl)
        self.cp.kubectl("create", "namespace", NAMESPACE)
        self.edgenodes_seconds = self.create_edgenodes()
        self.managers_started_at = time.monotonic()
        for m in self.managers:
            self.start_manager(m)

    def create_edgenodes(self, *, chunk: int = 1000, parallel: int = 2) -> float:
        """`kubectl create` the EdgeNodes in chunks, `parallel` kubectl processes at a time; seconds taken."""
        t0 = time.monotonic()
        pending: list[subprocess.Popen] = []
        for i in range(0, len(self.nodes), chunk):
            items = [edgenode(n, pods=self.pods, rev=0) for n in self.nodes[i : i + chunk]]
            proc = subprocess.Popen(self.kubectl_cmd("create", "-f", "-"), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            proc.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
            pending.append(proc)
            while len(pending) >= parallel:
                self._reap(pending.pop(0))
        for proc in pending:
            self._reap(proc)
        return time.monotonic() - t0

    @staticmethod
    def _reap(proc: subprocess.Popen) -> None:
        err = proc.stderr.read() if proc.stderr else ""
        if proc.wait(timeout=600) != 0:
            raise RuntimeError(f"kubectl create of EdgeNodes failed: {err[-2000:]}")

    def kubectl_cmd(self, *args: str) -> list[str]:
        return [str(self.cp.kubectl_path), "--kubeconfig", str(self.cp.kubeconfig), *args]

    def start_manager(self, m: ManagerProc) -> None:
        """Start (or restart) one manager with --leader-elect on its own data dir and ports."""
        log = open(self.workdir / f"edge-manager-{m.index}.log", "ab")
        try:
            m.proc = subprocess.Popen([
                str(BIN / "edge-manager"), "--kubeconfig", str(self.cp.kubeconfig), "--namespace", NAMESPACE,
                "--sync-server", m.sync_address, "--data-dir", str(m.data_dir), "--insecure",
                "--metrics-addr", f"127.0.0.1:{m.metrics_port}", "--log-level", "INFO",
                "--leader-elect", *self.timings.flags(), "--leader-elect-identity", m.identity,
                "--leader-elect-resource-namespace", NAMESPACE, "--advertise-address", m.sync_address,
                *self.extra_flags,
            ], cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent)
        finally:
            log.close()

    def kill(self, m: ManagerProc) -> float:
        """SIGKILL one manager's process group; the monotonic time of the kill."""
        assert m.proc is not None
        t = time.monotonic()
        os.killpg(m.proc.pid, signal.SIGKILL)
        m.proc.wait(timeout=30)
        return t

    def stop(self) -> None:
        for m in self.managers:
            if m.alive:
                m.proc.terminate()  # type: ignore[union-attr]
        for m in self.managers:
            if m.proc is None:
                continue
            try:
                m.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(timeout=10)
        self.cp.stop()

    # -- reading the managers ----------------------------------------------------------

    def lease(self) -> tuple[str, int]:
        """(holderIdentity or '', leaseTransitions) of the managers' Lease ('' before it exists)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if self._leases is None:
            self._leases = client.CoordinationV1Api(self.cp.api_client())
        try:
            lease = self._leases.read_namespaced_lease(LEASE_NAME, NAMESPACE, _request_timeout=5)
        except ApiException as exc:
            if exc.status == 404:
                return "", 0
            raise
        return lease.spec.holder_identity or "", lease.spec.lease_transitions or 0

    def by_identity(self, identity: str) -> ManagerProc | None:
        return next((m for m in self.managers if m.identity == identity), None)

    def leader(self) -> ManagerProc | None:
        """The manager the Lease names, if any."""
        return self.by_identity(self.lease()[0])

    def metrics(self, m: ManagerProc) -> dict[str, float]:
        """One scrape of a manager's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{m.metrics_port}/metrics", timeout=5) as resp:
            return parse_metrics(resp.read().decode())

    def ready(self, m: ManagerProc) -> bool:
        """/readyz answers 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{m.metrics_port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def check_alive(self) -> None:
        for m in self.managers:
            if m.proc is not None and m.proc.poll() is not None and m.proc.returncode != -signal.SIGKILL:
                tail = "\n  ".join(self.log_path(m).read_text(errors="replace").splitlines()[-15:])
                raise RuntimeError(f"edge-manager {m.index} exited with {m.proc.returncode}; its log ends:\n  {tail}")

    def wait_leader_ready(self, *, timeout: float) -> ManagerProc:
        """Wait until the Lease names a manager and that manager is ready; return it."""
        found: list[ManagerProc] = []

        def leader_ready() -> bool:
            self.check_alive()
            m = self.leader()
            if m is not None and self.ready(m):
                found.append(m)
                return True
            return False

        wait_for(leader_ready, timeout=timeout, what="a ready leader", interval=0.2)
        return found[-1]

    def head(self, m: ManagerProc) -> int:
        """The manager's log head (k8s_edge_manager_head_offset)."""
        return int(metric_sum(self.metrics(m), "k8s_edge_manager_head_offset"))

    def follow_head(self, m: ManagerProc) -> int | None:
        """A standby's followed head (k8s_edge_manager_follow_head_offset), None when it does not export it."""
        metrics = self.metrics(m)
        if any(k.startswith("k8s_edge_manager_follow_head_offset") for k in metrics):
            return int(metric_sum(metrics, "k8s_edge_manager_follow_head_offset"))
        return None

    def standby_in_sync(self, leader: ManagerProc, standby: ManagerProc) -> bool:
        """The leader counts the standby in sync with no lag (k8s_edge_manager_replication_lag_events{standby})."""
        metrics = self.metrics(leader)
        lag = metrics.get(f'k8s_edge_manager_replication_lag_events{{standby="{standby.identity}"}}')
        return lag == 0 and metric_sum(metrics, "k8s_edge_manager_standbys_in_sync") >= 1

    def wait_caught_up(self, leader: ManagerProc, standby: ManagerProc, *, at_least: int, timeout: float) -> int:
        """Wait until the leader's head is at least `at_least` and the standby holds it; the head.

        Held: the standby's own follow head reaches the leader's head, or (a standby that does not
        export it) the leader reports it in sync with no lag.
        """
        heads: list[int] = []

        def caught_up() -> bool:
            self.check_alive()
            try:
                h = self.head(leader)
                heads.append(h)
                if h < at_least:
                    return False
                followed = self.follow_head(standby)
                return followed >= h if followed is not None else self.standby_in_sync(leader, standby)
            except (urllib.error.URLError, OSError):  # a metrics server not (yet) serving
                return False

        wait_for(caught_up, timeout=timeout, what=f"the standby holding the leader's head (>= {at_least})",
                 interval=0.25)
        return heads[-1]

    def log_path(self, m: ManagerProc) -> Path:
        return self.workdir / f"edge-manager-{m.index}.log"

    def listed(self, m: ManagerProc, *, since_wall: float) -> tuple[float, int, int] | None:
        """(wall time, EdgeNodes, events appended) of the manager's last "EdgeNodes listed" line after since_wall."""
        found = None
        for line in self.log_path(m).read_text(errors="replace").splitlines():
            match = _LISTED.match(line)
            if match:
                t = datetime.fromisoformat(match["time"]).timestamp()
                if t >= since_wall:
                    found = (t, int(match["objects"]), int(match["events"]))
        return found


_LISTED = re.compile(r"(?P<time>\S+) .*EdgeNodes listed: (?P<objects>\d+) object\(s\), (?P<events>\d+) event\(s\) appended")
POLL_SECONDS = 0.05


class TakeoverWatch:
    """Polls the Lease and a standby from a thread: when the Lease named it, when it was ready as leader.

    Ready: /readyz 200 (EdgeNodes listed and diffed, serving) and, when the manager exports it,
    k8s_edge_manager_leader 1. Times are time.monotonic().
    """

    def __init__(self, cluster: HaCluster, standby: ManagerProc) -> None:
        self.cluster = cluster
        self.standby = standby
        self.acquired: float | None = None
        self.ready: float | None = None
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="takeover-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.ready is None:
            try:
                if self.acquired is None and self.cluster.lease()[0] == self.standby.identity:
                    self.acquired = time.monotonic()
                if self.acquired is not None and self.cluster.ready(self.standby):
                    leading = self.cluster.metrics(self.standby).get("k8s_edge_manager_leader")
                    if leading is None or leading == 1:
                        self.ready = time.monotonic()
            except Exception as exc:  # noqa: BLE001 (the API or the manager busy: poll again)
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(POLL_SECONDS)

    def wait(self, *, timeout: float) -> None:
        """Until ready (or raise, naming the last poll errors)."""
        deadline = time.monotonic() + timeout
        while self.ready is None:
            self.cluster.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.standby.identity} not leading and ready within {timeout:g}s "
                                   f"(acquired: {self.acquired is not None}; poll errors {self.errors[-3:]})")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
