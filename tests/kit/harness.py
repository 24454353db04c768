"""The system under test as real processes: managers, agents, kubelets, Toxiproxy, and the faults to inject.

```
kubectl ─> kube-apiserver <─[proxy "apiserver"]─ edge-manager <─[proxy "agent-<node>"]─ edge-agent (one per node)
                 ^                                                                          │ manifests
                 └──────────── Node, mirror pods <pod>-<node> ───── hollow kubelet <─────────┘ (one per node)
```
Every agent reaches the manager through its own Toxiproxy proxy, and the manager reaches
kube-apiserver through one too, so a test can cut, reset, black-hole, slow or narrow each
link. The sync links are TLS with client certificates that the agents got by joining
(docs/joining.md): each system has its own CA Secret and one bootstrap token, and each agent
joins the manager's join listener directly at its first start (later starts reuse its pki/). Each agent has its own --data-dir and --pod-manifest-path, with foreign files planted
in the folder that the agent must never touch; that folder is the static-pod folder of the
node's hollow kubelet (kubemark, tools/hollow_kubelet.py: real kubelet code, fake container
runtime), which talks to kube-apiserver directly. Processes run in their own process groups
and are killed in `close()` (the fixtures call it in a finalizer).

With `managers=2` (or 3) the system is highly available (docs/ha.md, issue #14): every manager
runs with --leader-elect and short lease timings, its own data dir and ports, its own proxy to
kube-apiserver (one manager can be cut off the API while agents still reach it), and a "peer"
proxy in front of its sync port that is its --advertise-address (standbys follow the leader
through it, so a test can cut a leader off its standbys). Each agent has one proxy per manager
and gets every one of them (repeated --sync-server); its first join goes through a "join"
proxy the harness points at the leader's join port, as the Service selecting the leader's pod
does in deploy/. `managers=1` (the default) is the single manager of before, unchanged.

Imports eventlog (offline log compaction, read-only observation), the checker and the join
test kit (tests/kit/joining.py: a CA, Secrets through kubectl); never manager or agent
code, which runs only as the `edge-manager` / `edge-agent` processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from eventlog import LogStore
from tests.kit import checker
from tests.kit.joining import make_join_pki, put_ca_secret, put_token
from tests.kit.manager import sample
from tests.kit.processes import Daemon, DaemonDied, command, free_port
from tests.kit.toxiproxy import Proxy, ToxiproxyServer
from tests.kit.waits import http_get, wait_for
from tools.hollow_kubelet import HollowKubelet


FOREIGN_FILES = {  # an operator's own static pods and notes, next to ours
    "kube-vip.yaml": b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-vip\n",
    "README.txt": b"static pods of this node; k8s-edge owns only k8s-edge_* files\n",
    ".k8s-edge_notes.json": b"{}",  # dot-file: kubelet ignores it, and it is not one of ours
}
MANAGER_STORE = "eventlog"  # eventlog.opening.MANAGER_SUBDIR
AGENT_STORE = "replica"  # eventlog.opening.AGENT_SUBDIR
LEASE_NAMESPACE = "default"


@dataclass(frozen=True)
class LeaseTimings:
    """--leader-elect-* durations for tests: short, and within the manager's check lease > renew > 1.2 x retry."""

    lease_duration: float = 4.0
    renew_deadline: float = 3.0
    retry_period: float = 1.0
    standby_timeout: float = 10.0  # the default: a standby busy catching up under load must not drop out

    def args(self) -> list[str]:
        return ["--leader-elect-lease-duration", f"{self.lease_duration:g}s",
                "--leader-elect-renew-deadline", f"{self.renew_deadline:g}s",
                "--leader-elect-retry-period", f"{self.retry_period:g}s",
                "--standby-timeout", f"{self.standby_timeout:g}s"]

    @property
    def takeover(self) -> float:
        """Longest a standby may take to lead once the leader is gone: a full lease plus jittered retries."""
        return self.lease_duration + 3 * 1.2 * self.retry_period + 2.0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Agent:
    """One edge node: its agent process, folders and proxies (one per manager)."""

    node: str
    data_dir: Path
    manifest_dir: Path
    proxy: Proxy  # to the first manager
    daemon: Daemon
    metrics_port: int
    kubelet: HollowKubelet | None = None  # reads manifest_dir as its static-pod folder
    proxies: list[Proxy] = field(default_factory=list)  # to each manager, in the order of --sync-server

    @property
    def store(self) -> Path:
        return self.data_dir / AGENT_STORE


@dataclass
class Manager:
    """One edge-manager replica: its process, data dir, ports and links."""

    name: str
    identity: str  # --leader-elect-identity (HA), the Lease's holderIdentity while it leads
    data_dir: Path
    sync_port: int
    join_port: int
    metrics_port: int
    api_proxy: Proxy  # its link to kube-apiserver
    daemon: Daemon
    peer_proxy: Proxy | None = None  # its --advertise-address (HA): standbys follow it through this
    down: bool = False  # killed or stopped by the test: its exit is no failure

    @property
    def store(self) -> Path:
        return self.data_dir / MANAGER_STORE

    @property
    def running(self) -> bool:
        return self.daemon.running

    def metrics(self) -> str | None:
        """Its /metrics text; None when it does not answer (down, starting)."""
        if not self.daemon.running:
            return None
        try:
            status, body = http_get(self.metrics_port, "/metrics", timeout=3)
        except OSError:
            return None
        return body if status == 200 else None

    def metric(self, name: str) -> float | None:
        """One sample of its /metrics (name with labels as exposed); None when absent or down."""
        text = self.metrics()
        return None if text is None else sample(text, name)

    def leading(self) -> bool:
        """Its /metrics says it leads (k8s_edge_manager_leader 1)."""
        return self.metric("k8s_edge_manager_leader") == 1

    def log(self) -> str:
        """Everything it logged so far (all its runs)."""
        return self.daemon.log()


@dataclass
class Faults:
    """What the schedule did, so the checker knows which snapshots are allowed."""

    log_replacements: int = 0  # manager data dir wiped
    compactions: int = 0  # log compacted (offline) past some agent's position
    applied: list[str] = field(default_factory=list)
    wiped_logs: list[str] = field(default_factory=list)  # log_ids of the data dirs removed
    compactions_done: list[tuple[str, int]] = field(default_factory=list)  # (log_id, first retained offset)


class EdgeSystem:
    """One manager (or several, HA) and several agents as processes, wired through Toxiproxy."""

    def __init__(
        self,
        *,
        control_plane,
        toxiproxy: ToxiproxyServer,
        workdir: Path,
        nodes: Sequence[str],
        seed: int | None = None,
        manager_args: Sequence[str] = (),
        agent_args: Sequence[str] = (),
        resync_interval: float = 2.0,
        kubelets: bool = True,
        managers: int = 1,
        lease: LeaseTimings = LeaseTimings(),
    ) -> None:
        self.cp = control_plane
        self.toxiproxy = toxiproxy
        self.workdir = workdir
        self.seed = seed
        self.faults = Faults()
        self.ha = managers > 1
        self.lease = lease
        self.lease_name = f"edge-manager-{uuid.uuid4().hex[:8]}"  # one per system: no stale Lease of another test
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "POD_NAMESPACE", "POD_IP")}
        env["PYTHONUNBUFFERED"] = "1"
        api_port = int(control_plane.server.rsplit(":", 1)[1])

        # joining: a CA Secret of this system's own, one bootstrap token for its agents, the hash they pin
        pki = make_join_pki(workdir / "pki")
        self.ca_file = workdir / "pki" / "ca.crt"  # verifies every manager's serving certificate (--peer-ca-file)
        self.ca_file.write_bytes(pki.ca_cert)
        ca_secret = f"edge-agent-ca-{uuid.uuid4().hex[:8]}"
        put_ca_secret(control_plane, pki, name=ca_secret)
        self.token_file = workdir / "token"
        self.token_file.write_text(put_token(control_plane, expires_in=timedelta(hours=6)) + "\n")
        self.token_file.chmod(0o600)
        spki = x509.load_pem_x509_certificate(pki.ca_cert).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ca_hash = "sha256:" + hashlib.sha256(spki).hexdigest()  # kubeadm's discovery hash

        self.managers: list[Manager] = []
        for i in range(managers):
            tag = f"m{i}" if self.ha else ""
            api_proxy = toxiproxy.create_proxy("-".join(filter(None, ["apiserver", tag, workdir.name])),
                                               upstream=f"127.0.0.1:{api_port}")
            kubeconfig = workdir / f"manager{'-' + tag if tag else ''}.kubeconfig"
            kubeconfig.write_text(Path(control_plane.kubeconfig).read_text().replace(
                control_plane.server, f"https://{api_proxy.listen}"))
            data_dir = workdir / (f"manager-{tag}" if tag else "manager")
            sync_port, join_port, metrics_port = free_port(), free_port(), free_port()
            identity = f"{workdir.name}-{tag}" if tag else ""
            peer_proxy = None
            ha_args: list[str] = []
            if self.ha:
                peer_proxy = toxiproxy.create_proxy(f"peer-{tag}-{workdir.name}", upstream=f"127.0.0.1:{sync_port}")
                ha_args = ["--leader-elect", *lease.args(), "--leader-elect-identity", identity,
                           "--leader-elect-resource-name", self.lease_name,
                           "--leader-elect-resource-namespace", LEASE_NAMESPACE,
                           "--advertise-address", peer_proxy.listen, "--peer-ca-file", str(self.ca_file),
                           "--log-level", "DEBUG"]  # DEBUG: a line per append, with its time (fencing evidence)
            daemon = Daemon(f"edge-manager{' ' + tag if tag else ''}", [
                *command("edge-manager", "manager"), "--kubeconfig", str(kubeconfig),
                "--sync-server", f"127.0.0.1:{sync_port}", "--data-dir", str(data_dir),
                "--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
                "--agent-ca-secret", f"k8s-edge/{ca_secret}", "--join-server", f"127.0.0.1:{join_port}",
                "--metrics-addr", f"127.0.0.1:{metrics_port}", *ha_args, *manager_args,
            ], log_path=self.logs / f"manager{'-' + tag if tag else ''}.log", env=env)
            self.managers.append(Manager(tag or "manager", identity, data_dir, sync_port, join_port, metrics_port,
                                         api_proxy, daemon, peer_proxy))
        first = self.managers[0]
        # the single manager's names, as before (with HA: the first replica's)
        self.manager, self.manager_data, self.api_proxy = first.daemon, first.data_dir, first.api_proxy
        self.kubeconfig = workdir / ("manager-m0.kubeconfig" if self.ha else "manager.kubeconfig")
        self.sync_port, self.join_port, self.manager_metrics_port = first.sync_port, first.join_port, first.metrics_port
        # HA: agents join through the Service-like proxy that start() and wait_leader() point at the leader
        self.join_proxy = toxiproxy.create_proxy(f"join-{workdir.name}", upstream=f"127.0.0.1:{first.join_port}") \
            if self.ha else None
        join_address = self.join_proxy.listen if self.join_proxy else f"127.0.0.1:{first.join_port}"

        self.agents: dict[str, Agent] = {}
        for node in nodes:
            proxies = [toxiproxy.create_proxy(
                "-".join(filter(None, ["agent", node, m.name if self.ha else "", workdir.name])),
                upstream=f"127.0.0.1:{m.sync_port}") for m in self.managers]
            data_dir, manifest_dir = workdir / node / "data", workdir / node / "manifests"
            manifest_dir.mkdir(parents=True)
            for fname, content in FOREIGN_FILES.items():
                (manifest_dir / fname).write_bytes(content)
            metrics = free_port()
            daemon = Daemon(f"edge-agent {node}", [
                *command("edge-agent", "agent"), "--node-name", node,
                *(arg for p in proxies for arg in ("--sync-server", p.listen)),
                "--pod-manifest-path", str(manifest_dir), "--data-dir", str(data_dir),
                "--resync-interval", str(resync_interval), "--metrics-addr", f"127.0.0.1:{metrics}",
                "--join-server", join_address, "--token-file", str(self.token_file),
                "--discovery-token-ca-cert-hash", ca_hash, *agent_args,
            ], log_path=self.logs / f"agent-{node}.log", env=env)
            kubelet = HollowKubelet(
                node, kubemark=Path(control_plane.bin_dir) / "kubemark", kubeconfig=Path(control_plane.kubeconfig),
                static_pod_dir=manifest_dir, log_path=self.logs / f"kubelet-{node}.log", kubectl=control_plane.kubectl,
                extra_args=["--kube-api-qps=50", "--kube-api-burst=100"]) if kubelets else None
            self.agents[node] = Agent(node, data_dir, manifest_dir, proxies[0], daemon, metrics, kubelet, proxies)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def manager_store(self) -> Path:
        return self.manager_data / MANAGER_STORE

    def proxies(self) -> list[Proxy]:
        """Every Toxiproxy proxy of this system (the fixture deletes them)."""
        out = [m.api_proxy for m in self.managers] + [m.peer_proxy for m in self.managers if m.peer_proxy]
        out += [p for a in self.agents.values() for p in a.proxies]
        return out + ([self.join_proxy] if self.join_proxy else [])

    def start(self) -> EdgeSystem:
        """Start every kubelet (Nodes Ready), the managers (sync ports open; HA: one leads), then every agent."""
        kubelets = [a.kubelet for a in self.agents.values() if a.kubelet is not None]
        for k in kubelets:
            k.start(wait_ready=False)
        for k in kubelets:
            k.wait_ready()
        for m in self.managers:
            m.daemon.start()
            m.down = False
        for i in range(len(self.managers)):
            self._wait_ports(i)
        if self.ha:
            self.wait_leader()
        for node in self.agents:
            self.start_agent(node)
        return self

    def close(self) -> None:
        """Kill every process this system started, and drop its Nodes and mirror pods (finalizer)."""
        for a in self.agents.values():
            a.daemon.kill()
        for m in self.managers:
            m.daemon.kill()
        kubelets = [a.kubelet for a in self.agents.values() if a.kubelet is not None]
        for k in kubelets:
            k.kill()
        api_up = getattr(self.cp, "apiserver", None) is not None and self.cp.apiserver.poll() is None
        if kubelets and api_up:  # no node controller here: a dead kubelet's Node and mirror pods stay until deleted
            nodes = [k.node for k in kubelets]
            for node in nodes:
                self.cp.kubectl("delete", "pods", "-A", f"--field-selector=spec.nodeName={node}", "--force",
                                "--grace-period=0", "--wait=false", check=False, timeout=60)
            self.cp.kubectl("delete", "nodes", *nodes, "--wait=false", "--ignore-not-found", check=False, timeout=60)
        if self.ha and api_up:
            self.cp.kubectl("delete", "lease", "-n", LEASE_NAMESPACE, self.lease_name, "--ignore-not-found",
                            check=False, timeout=60)

    def _wait_ports(self, i: int) -> None:
        """Until manager i's sync port (and, single manager, its join port) accepts connections.

        Not /readyz, which waits for the first list: a fault may start the manager while kube-apiserver
        is restarting, and it serves agents from its log before it can list. A standby may not
        listen for joins (only the leader signs them), so with HA only the sync port counts."""
        m = self.managers[i]
        wait_for(lambda: m.daemon.check_alive() or (_port_open(m.sync_port) and (self.ha or _port_open(m.join_port))),
                 timeout=60, max_interval=1.0, what=f"{m.daemon.name}'s sync port", on_timeout=m.daemon.log_tail)

    def start_manager(self, i: int = 0) -> None:
        """Start manager i (as kubelet restarts a pod) and wait until its ports accept connections."""
        self.managers[i].daemon.start()
        self.managers[i].down = False
        self._wait_ports(i)

    def start_agent(self, node: str) -> None:
        """Start one agent (it connects by itself; nothing to wait for)."""
        self.agents[node].daemon.start()

    def check_alive(self) -> None:
        """Raise if a daemon that should run has died."""
        for m in self.managers:
            m.daemon.check_alive()
        for a in self.agents.values():
            a.daemon.check_alive()
            if a.kubelet is not None and a.kubelet.proc is not None and a.kubelet.proc.poll() is not None \
                    and a.kubelet.root_dir is not None:  # exited by itself, not killed by a test
                raise DaemonDied(f"hollow kubelet {a.node} exited with {a.kubelet.proc.returncode}\n"
                                 f"{a.kubelet.log_tail()}")

    def log_tails(self, lines: int = 30) -> str:
        """The tail of every daemon's log, for failure messages."""
        return "\n".join([*(m.daemon.log_tail(lines) for m in self.managers),
                          *(a.daemon.log_tail(lines) for a in self.agents.values()),
                          *(a.kubelet.log_tail(lines) for a in self.agents.values() if a.kubelet is not None)])

    # -- leadership (HA) ------------------------------------------------------------------

    def leaders(self) -> list[int]:
        """Indexes of the running managers whose /metrics say they lead (two would be a split brain)."""
        return [i for i, m in enumerate(self.managers) if m.leading()]

    def leader(self) -> int | None:
        """Index of the one manager that leads; None when none or several say so."""
        found = self.leaders() if self.ha else [0]
        return found[0] if len(found) == 1 else None

    def standbys(self) -> list[int]:
        """Indexes of the running managers that do not lead."""
        lead = self.leader()
        return [i for i, m in enumerate(self.managers) if m.running and i != lead]

    def lease_record(self) -> dict:
        """The Lease as kube-apiserver holds it (kubectl get lease -o json); {} when there is none."""
        res = self.cp.kubectl("get", "lease", "-n", LEASE_NAMESPACE, self.lease_name, "-o", "json", check=False,
                              timeout=30)
        return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else {}

    def lease_holder(self) -> int | None:
        """Index of the manager the Lease names as holder (from the API, not from the managers)."""
        holder = (self.lease_record().get("spec") or {}).get("holderIdentity")
        return next((i for i, m in enumerate(self.managers) if holder and m.identity == holder), None)

    def wait_leader(self, *, not_: int | None = None, timeout: float | None = None) -> int:
        """Until exactly one manager (other than `not_`) leads, by its metrics and the Lease; point joins at it."""
        def found() -> tuple[int] | None:
            self.check_running_alive()
            i = self.leader()
            return (i,) if i is not None and i != not_ and self.lease_holder() == i else None

        (i,) = wait_for(found, timeout=timeout or self.lease.takeover + 20, max_interval=0.5,
                        what=f"one manager{'' if not_ is None else f' other than {self.managers[not_].name}'} to lead",
                        on_timeout=self.log_tails)
        if self.join_proxy is not None:
            self.join_proxy.set_upstream(f"127.0.0.1:{self.managers[i].join_port}")
        print(f"[e2e {time.strftime('%H:%M:%S')}] {self.managers[i].name} leads", flush=True)
        return i

    def wait_standbys_in_sync(self, *, timeout: float = 60) -> int:
        """Until the leader counts every running standby in sync (k8s_edge_manager_standbys_in_sync); its index.

        Before a fault on the leader: only then does the promise hold that no agent is ahead of
        the standby that takes over (docs/ha.md, the high-water mark)."""
        def in_sync() -> tuple[int] | None:
            self.check_running_alive()
            lead = self.leader()
            if lead is None:
                return None
            want = sum(1 for i, m in enumerate(self.managers) if m.running and i != lead)
            return (lead,) if self.managers[lead].metric("k8s_edge_manager_standbys_in_sync") == want else None

        (lead,) = wait_for(in_sync, timeout=timeout, max_interval=0.5, what="every running standby in sync",
                           on_timeout=self.log_tails)
        return lead

    def check_running_alive(self) -> None:
        """Raise if a manager that was started and not killed by the test exited by itself."""
        for m in self.managers:
            if not m.down:
                m.daemon.check_alive()

    # -- faults: processes ----------------------------------------------------------------

    def _note(self, what: str) -> None:
        self.faults.applied.append(what)
        print(f"[e2e {time.strftime('%H:%M:%S')}] fault: {what}", flush=True)

    def kill_manager(self, i: int = 0) -> None:
        """kill -9 manager i."""
        self._note(f"kill -9 {self.managers[i].daemon.name}")
        self.managers[i].down = True
        self.managers[i].daemon.kill()

    def stop_manager(self, i: int = 0) -> None:
        """Stop manager i gracefully (SIGTERM, as a rolling update deletes its pod; kill -9 after 15 s)."""
        self._note(f"stop (SIGTERM) {self.managers[i].daemon.name}")
        self.managers[i].down = True
        self.managers[i].daemon.stop()

    def restart_manager(self, i: int = 0) -> None:
        """kill -9 and start manager i with the same data dir."""
        self.kill_manager(i)
        self.start_manager(i)

    def wipe_manager(self) -> None:
        """kill -9 the manager, remove its data dir (a new log_id), start it again."""
        self._note("wipe manager data dir")
        self.manager.kill()
        if self.manager_store.exists():
            with LogStore(self.manager_store, readonly=True) as log:
                self.faults.wiped_logs.append(log.log_id)
        shutil.rmtree(self.manager_data, ignore_errors=True)
        self.faults.log_replacements += 1
        self.start_manager()

    def compact_manager_log(self, *, keep_last: int = 0) -> int:
        """kill -9 the manager, compact its log offline (eventlog LogStore.compact), start it again."""
        self._note(f"compact manager log offline (keep_last={keep_last})")
        self.manager.kill()
        with LogStore(self.manager_store) as log:
            result = log.compact(keep_last=keep_last)
            self.faults.compactions_done.append((log.log_id, result.first_offset))
        self.faults.compactions += 1
        self.start_manager()
        return result.first_offset

    def kill_agent(self, node: str) -> None:
        """kill -9 one agent."""
        self._note(f"kill -9 agent {node}")
        self.agents[node].daemon.kill()

    def restart_agent(self, node: str) -> None:
        """kill -9 and start one agent."""
        self.kill_agent(node)
        self.start_agent(node)

    def kill_kubelet(self, node: str) -> None:
        """kill -9 one node's hollow kubelet (its Node and mirror pods stay in the API as last reported)."""
        self._note(f"kill -9 kubelet {node}")
        kubelet = self.agents[node].kubelet
        assert kubelet is not None, "this system runs no kubelets"
        kubelet.kill()

    def start_kubelet(self, node: str) -> None:
        """Start one node's hollow kubelet again on the same static-pod folder; wait for its Node to be Ready."""
        kubelet = self.agents[node].kubelet
        assert kubelet is not None, "this system runs no kubelets"
        kubelet.start()

    def restart_apiserver(self) -> None:
        """kill -9 kube-apiserver and start it on the same port."""
        self._note("kill -9 kube-apiserver and restart")
        self.cp.restart_apiserver(kill=True)

    def api_outage_with_compaction(self, during: Callable[[], object] | None = None) -> None:
        """The managers lose the API while EdgeNodes change; etcd is compacted; kube-apiserver is killed and restarted.

        The manager must notice the broken watch, and relist and diff once the API is back
        (it relists after any reconnect, so this is a relist, not a 410: see
        `wait_watch_expired` for the 410 itself).
        """
        self._note("manager cut off from the API, etcd compaction, apiserver kill -9 and restart")
        for m in self.managers:
            m.api_proxy.set_enabled(False)
        if during is not None:
            during()
        self.cp.kill_apiserver()
        self.cp.compact_etcd()
        self.cp.start_apiserver()
        for m in self.managers:
            m.api_proxy.set_enabled(True)

    def compact_etcd_past_watch(self) -> int:
        """Bump etcd's revision without touching EdgeNodes, then compact: the manager's watch position is gone.

        With kube-apiserver's watch cache off, the manager's next watch from that
        resourceVersion (when the server ends the current one) is answered 410 Gone.
        """
        self._note("etcd compaction past the manager's watch resourceVersion")
        self.cp.kubectl("create", "configmap", f"bump-{time.monotonic_ns()}", "-n", "default")
        return self.cp.compact_etcd()

    def manager_log(self, i: int = 0) -> str:
        """Everything manager i logged so far (all its runs)."""
        return self.managers[i].log()

    # -- faults: network ------------------------------------------------------------------

    def partition(self, node: str) -> None:
        """Cut one agent off (connections closed, new ones refused)."""
        self._note(f"partition {node}")
        for p in self.agents[node].proxies:
            p.set_enabled(False)

    def reset_peer(self, node: str) -> None:
        """Every connection of one agent is reset (RST) as soon as data flows."""
        self._note(f"connection reset {node}")
        for p in self.agents[node].proxies:
            p.reset_connections()

    def black_hole(self, node: str) -> None:
        """One agent's traffic is silently dropped both ways; nothing is closed."""
        self._note(f"black hole {node}")
        for p in self.agents[node].proxies:
            p.black_hole()

    def slow(self, node: str, *, latency_ms: int = 300) -> None:
        """Latency on one agent's link."""
        self._note(f"latency {latency_ms}ms {node}")
        for p in self.agents[node].proxies:
            p.slow(latency_ms=latency_ms)

    def narrow(self, node: str, *, rate_kb: int = 4) -> None:
        """Bandwidth limit on one agent's link."""
        self._note(f"bandwidth {rate_kb}KB/s {node}")
        for p in self.agents[node].proxies:
            p.narrow(rate_kb=rate_kb)

    def cut_from_api(self, i: int) -> None:
        """Manager i loses kube-apiserver (connections closed, new ones refused); agents still reach it."""
        self._note(f"cut {self.managers[i].name} off the API")
        self.managers[i].api_proxy.set_enabled(False)

    def delay_api(self, i: int, *, latency_ms: int) -> None:
        """Manager i's link to kube-apiserver delays every byte both ways: watch events and renewals arrive late."""
        self._note(f"delay {self.managers[i].name}'s API link by {latency_ms}ms")
        self.managers[i].api_proxy.slow(latency_ms=latency_ms, jitter_ms=0)

    def cut_from_standbys(self, i: int) -> None:
        """Nobody reaches manager i's advertised sync address (standbys cannot follow it while it leads)."""
        self._note(f"cut {self.managers[i].name}'s advertised address")
        peer = self.managers[i].peer_proxy
        assert peer is not None, "a single manager has no advertised address"
        peer.set_enabled(False)

    def heal(self, node: str | None = None) -> None:
        """Remove every network fault (of one agent, or everywhere including the managers' links)."""
        for a in ([self.agents[node]] if node else self.agents.values()):
            for p in a.proxies:
                p.clear()
        if node is None:
            for m in self.managers:
                m.api_proxy.clear()
                if m.peer_proxy is not None:
                    m.peer_proxy.clear()

    def heal_all(self) -> None:
        """Heal the network and start whatever is down."""
        self.heal()
        for i, m in enumerate(self.managers):
            if not m.daemon.running:
                self.start_manager(i)
        for node, a in self.agents.items():
            if not a.daemon.running:
                self.start_agent(node)
            if a.kubelet is not None and not a.kubelet.running:
                self.start_kubelet(node)

    # -- observation ----------------------------------------------------------------------

    def edgenodes(self) -> list[dict]:
        """Every EdgeNode in the API (the desired state), with status."""
        out = self.cp.kubectl("get", "edgenodes", "-A", "-o", "json", timeout=60).stdout
        return json.loads(out)["items"]

    def kubelet_nodes(self) -> frozenset[str]:
        """The nodes whose hollow kubelet runs now."""
        return frozenset(n for n, a in self.agents.items() if a.kubelet is not None and a.kubelet.running)

    def mirror_pods(self) -> tuple[checker.MirrorPodObs, ...]:
        """The mirror pods the API holds for this system's nodes."""
        if not any(a.kubelet is not None for a in self.agents.values()):
            return ()
        out = self.cp.kubectl("get", "pods", "-A", "-o", "json", timeout=60).stdout
        return checker.mirror_pods_of(json.loads(out)["items"], self.agents)

    def observe(self, *, verify: bool = False) -> checker.Observation:
        """Read the API, the managers' stores, every agent and the mirror pods, read-only.

        With HA, `manager` is the leader's store (an error when no single manager leads), every
        manager's store is read for the caught-up checks, and every running manager's for one history."""
        kubelet_nodes = self.kubelet_nodes()
        edgenodes = self.edgenodes()
        mirror_pods = self.mirror_pods()
        replicas: dict[str, checker.ManagerObs] = {}
        running: frozenset[str] = frozenset()
        history = None
        if self.ha:
            lead = self.leader()
            if lead is None:
                raise AssertionError(f"no single manager leads (leaders by /metrics: {self.leaders()})")
            stores = [m for m in self.managers if (m.store / "data.mdb").exists()]
            replicas = {m.name: checker.observe_manager(m.store) for m in stores}
            running = frozenset(m.name for m in self.managers if m.running)
            mgr = replicas[self.managers[lead].name]
            # a manager that is down may hold a tail it appended but never replicated (the high-water mark kept it
            # from agents); it gives that up for a copy of the leader's log when it comes back
            history = checker.compare_stores([m.store for m in stores if m.running])
        else:
            mgr = checker.observe_manager(self.manager_store)
        agents = {n: checker.observe_agent(n, a.store, a.manifest_dir, foreign=FOREIGN_FILES)
                  for n, a in self.agents.items()}
        results = {}
        if verify:
            for path in [*(m.store for m in self.managers if (m.store / "data.mdb").exists()),
                         *(a.store for a in self.agents.values())]:
                results[str(path)] = checker.run_verify(path)
        return checker.Observation(tuple(edgenodes), mgr, agents, results, mirror_pods, kubelet_nodes,
                                   replicas=replicas, running_replicas=running, history=history)

    def snapshot_counts(self) -> dict[str, int]:
        """Snapshots each agent installed, from its journal."""
        return {n: len(checker.journal_snapshots(o.journal))
                for n, o in ((n, checker.observe_agent(n, a.store, a.manifest_dir)) for n, a in self.agents.items())}

    def wait_converged(self, *, timeout: float = 150.0, context: str = "",
                       standbys: bool = True) -> checker.Observation:
        """Wait until every invariant holds (statuses included), then check once more with `verify`.

        With HA also one history over every manager store, every agent consistent with the
        leader's log, and (unless `standbys=False`: one is cut off on purpose) every running
        standby caught up with the leader. On timeout: every remaining problem, the seed, and
        the daemons' log tails.
        """
        last: list[str] = ["not observed yet"]
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive_running()
            try:
                last = checker.problems_of(self.observe(), standbys=standbys)
            except DaemonDied:
                raise
            except Exception as e:  # noqa: BLE001 - a store being created or an API restart: look again
                last = [f"observation failed: {e!r}"]
            if not last:
                break
            if time.monotonic() > deadline:
                raise AssertionError(checker.format_failure(last, seed=self.seed, context=f"not converged after "
                                     f"{timeout:.0f}s {context}".strip()) + "\n" + self.log_tails())
            time.sleep(1.0)
        obs = self.observe(verify=True)
        problems = checker.problems_of(obs, standbys=standbys)
        if problems:
            raise AssertionError(checker.format_failure(problems, seed=self.seed, context=context)
                                 + "\n" + self.log_tails())
        return obs

    def check_alive_running(self) -> None:
        """check_alive for a single manager; with HA a manager the test killed is simply down."""
        if not self.ha:
            self.check_alive()
            return
        for a in self.agents.values():
            a.daemon.check_alive()
        self.check_running_alive()


def delete_all_edgenodes(cp) -> None:
    """Delete every EdgeNode in the (private) cluster, so the next test starts empty."""
    cp.kubectl("delete", "edgenodes", "--all", "-A", "--wait=false", check=False, timeout=120)
