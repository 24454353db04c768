"""The system under test as real processes: manager, agents, kubelets, Toxiproxy, and the faults to inject.

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
from tests.kit.processes import Daemon, DaemonDied, command, free_port
from tests.kit.toxiproxy import Proxy, ToxiproxyServer
from tests.kit.waits import wait_for
from tools.hollow_kubelet import HollowKubelet


FOREIGN_FILES = {  # an operator's own static pods and notes, next to ours
    "kube-vip.yaml": b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-vip\n",
    "README.txt": b"static pods of this node; k8s-edge owns only k8s-edge_* files\n",
    ".k8s-edge_notes.json": b"{}",  # dot-file: kubelet ignores it, and it is not one of ours
}
MANAGER_STORE = "eventlog"  # eventlog.opening.MANAGER_SUBDIR
AGENT_STORE = "replica"  # eventlog.opening.AGENT_SUBDIR


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Agent:
    """One edge node: its agent process, folders and proxy."""

    node: str
    data_dir: Path
    manifest_dir: Path
    proxy: Proxy
    daemon: Daemon
    metrics_port: int
    kubelet: HollowKubelet | None = None  # reads manifest_dir as its static-pod folder

    @property
    def store(self) -> Path:
        return self.data_dir / AGENT_STORE


@dataclass
class Faults:
    """What the schedule did, so the checker knows which snapshots are allowed."""

    log_replacements: int = 0  # manager data dir wiped
    compactions: int = 0  # log compacted (offline) past some agent's position
    applied: list[str] = field(default_factory=list)
    wiped_logs: list[str] = field(default_factory=list)  # log_ids of the data dirs removed
    compactions_done: list[tuple[str, int]] = field(default_factory=list)  # (log_id, first retained offset)


class EdgeSystem:
    """A manager and several agents as processes, wired through Toxiproxy."""

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
    ) -> None:
        self.cp = control_plane
        self.toxiproxy = toxiproxy
        self.workdir = workdir
        self.seed = seed
        self.faults = Faults()
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        api_port = int(control_plane.server.rsplit(":", 1)[1])
        self.api_proxy = toxiproxy.create_proxy(f"apiserver-{workdir.name}", upstream=f"127.0.0.1:{api_port}")
        self.kubeconfig = workdir / "manager.kubeconfig"
        self.kubeconfig.write_text(Path(control_plane.kubeconfig).read_text().replace(
            control_plane.server, f"https://{self.api_proxy.listen}"))

        # joining: a CA Secret of this system's own, one bootstrap token for its agents, the hash they pin
        pki = make_join_pki(workdir / "pki")
        ca_secret = f"edge-agent-ca-{uuid.uuid4().hex[:8]}"
        put_ca_secret(control_plane, pki, name=ca_secret)
        self.token_file = workdir / "token"
        self.token_file.write_text(put_token(control_plane, expires_in=timedelta(hours=6)) + "\n")
        self.token_file.chmod(0o600)
        spki = x509.load_pem_x509_certificate(pki.ca_cert).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ca_hash = "sha256:" + hashlib.sha256(spki).hexdigest()  # kubeadm's discovery hash

        self.manager_data = workdir / "manager"
        self.sync_port = free_port()
        self.join_port = free_port()
        self.manager_metrics_port = free_port()
        self.manager = Daemon("edge-manager", [
            *command("edge-manager", "manager"), "--kubeconfig", str(self.kubeconfig),
            "--sync-server", f"127.0.0.1:{self.sync_port}", "--data-dir", str(self.manager_data),
            "--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
            "--agent-ca-secret", f"k8s-edge/{ca_secret}", "--join-server", f"127.0.0.1:{self.join_port}",
            "--metrics-addr", f"127.0.0.1:{self.manager_metrics_port}", *manager_args,
        ], log_path=self.logs / "manager.log", env=env)

        self.agents: dict[str, Agent] = {}
        for node in nodes:
            proxy = toxiproxy.create_proxy(f"agent-{node}-{workdir.name}", upstream=f"127.0.0.1:{self.sync_port}")
            data_dir, manifest_dir = workdir / node / "data", workdir / node / "manifests"
            manifest_dir.mkdir(parents=True)
            for fname, content in FOREIGN_FILES.items():
                (manifest_dir / fname).write_bytes(content)
            metrics = free_port()
            daemon = Daemon(f"edge-agent {node}", [
                *command("edge-agent", "agent"), "--node-name", node, "--sync-server", proxy.listen,
                "--pod-manifest-path", str(manifest_dir), "--data-dir", str(data_dir),
                "--resync-interval", str(resync_interval), "--metrics-addr", f"127.0.0.1:{metrics}",
                "--join-server", f"127.0.0.1:{self.join_port}", "--token-file", str(self.token_file),
                "--discovery-token-ca-cert-hash", ca_hash, *agent_args,
            ], log_path=self.logs / f"agent-{node}.log", env=env)
            kubelet = HollowKubelet(
                node, kubemark=Path(control_plane.bin_dir) / "kubemark", kubeconfig=Path(control_plane.kubeconfig),
                static_pod_dir=manifest_dir, log_path=self.logs / f"kubelet-{node}.log", kubectl=control_plane.kubectl,
                extra_args=["--kube-api-qps=50", "--kube-api-burst=100"]) if kubelets else None
            self.agents[node] = Agent(node, data_dir, manifest_dir, proxy, daemon, metrics, kubelet)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def manager_store(self) -> Path:
        return self.manager_data / MANAGER_STORE

    def start(self) -> EdgeSystem:
        """Start every kubelet (Nodes Ready), the manager (its sync port open), then every agent."""
        kubelets = [a.kubelet for a in self.agents.values() if a.kubelet is not None]
        for k in kubelets:
            k.start(wait_ready=False)
        for k in kubelets:
            k.wait_ready()
        self.start_manager()
        for node in self.agents:
            self.start_agent(node)
        return self

    def close(self) -> None:
        """Kill every process this system started, and drop its Nodes and mirror pods (finalizer)."""
        for a in self.agents.values():
            a.daemon.kill()
        self.manager.kill()
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

    def start_manager(self) -> None:
        """Start edge-manager and wait until its sync and join ports accept connections.

        Not /readyz, which waits for the first list: a fault may start the manager while kube-apiserver
        is restarting, and it serves agents from its log before it can list."""
        self.manager.start()
        wait_for(lambda: self.manager.check_alive() or (_port_open(self.sync_port) and _port_open(self.join_port)),
                 timeout=60, max_interval=1.0, what="edge-manager's sync and join ports",
                 on_timeout=self.manager.log_tail)

    def start_agent(self, node: str) -> None:
        """Start one agent (it connects by itself; nothing to wait for)."""
        self.agents[node].daemon.start()

    def check_alive(self) -> None:
        """Raise if a daemon that should run has died."""
        self.manager.check_alive()
        for a in self.agents.values():
            a.daemon.check_alive()
            if a.kubelet is not None and a.kubelet.proc is not None and a.kubelet.proc.poll() is not None \
                    and a.kubelet.root_dir is not None:  # exited by itself, not killed by a test
                raise DaemonDied(f"hollow kubelet {a.node} exited with {a.kubelet.proc.returncode}\n"
                                 f"{a.kubelet.log_tail()}")

    def log_tails(self, lines: int = 30) -> str:
        """The tail of every daemon's log, for failure messages."""
        return "\n".join([self.manager.log_tail(lines), *(a.daemon.log_tail(lines) for a in self.agents.values()),
                          *(a.kubelet.log_tail(lines) for a in self.agents.values() if a.kubelet is not None)])

    # -- faults: processes ----------------------------------------------------------------

    def _note(self, what: str) -> None:
        self.faults.applied.append(what)
        print(f"[e2e {time.strftime('%H:%M:%S')}] fault: {what}", flush=True)

    def kill_manager(self) -> None:
        """kill -9 the manager."""
        self._note("kill -9 manager")
        self.manager.kill()

    def restart_manager(self) -> None:
        """kill -9 and start the manager with the same data dir."""
        self.kill_manager()
        self.start_manager()

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
        """The manager loses the API while EdgeNodes change; etcd is compacted; kube-apiserver is killed and restarted.

        The manager must notice the broken watch, and relist and diff once the API is back
        (it relists after any reconnect, so this is a relist, not a 410: see
        `wait_watch_expired` for the 410 itself).
        """
        self._note("manager cut off from the API, etcd compaction, apiserver kill -9 and restart")
        self.api_proxy.set_enabled(False)
        if during is not None:
            during()
        self.cp.kill_apiserver()
        self.cp.compact_etcd()
        self.cp.start_apiserver()
        self.api_proxy.set_enabled(True)

    def compact_etcd_past_watch(self) -> int:
        """Bump etcd's revision without touching EdgeNodes, then compact: the manager's watch position is gone.

        With kube-apiserver's watch cache off, the manager's next watch from that
        resourceVersion (when the server ends the current one) is answered 410 Gone.
        """
        self._note("etcd compaction past the manager's watch resourceVersion")
        self.cp.kubectl("create", "configmap", f"bump-{time.monotonic_ns()}", "-n", "default")
        return self.cp.compact_etcd()

    def manager_log(self) -> str:
        """Everything the manager logged so far (all its runs)."""
        return self.manager.log_path.read_text(errors="replace")

    # -- faults: network ------------------------------------------------------------------

    def partition(self, node: str) -> None:
        """Cut one agent off (connections closed, new ones refused)."""
        self._note(f"partition {node}")
        self.agents[node].proxy.set_enabled(False)

    def reset_peer(self, node: str) -> None:
        """Every connection of one agent is reset (RST) as soon as data flows."""
        self._note(f"connection reset {node}")
        self.agents[node].proxy.reset_connections()

    def black_hole(self, node: str) -> None:
        """One agent's traffic is silently dropped both ways; nothing is closed."""
        self._note(f"black hole {node}")
        self.agents[node].proxy.black_hole()

    def slow(self, node: str, *, latency_ms: int = 300) -> None:
        """Latency on one agent's link."""
        self._note(f"latency {latency_ms}ms {node}")
        self.agents[node].proxy.slow(latency_ms=latency_ms)

    def narrow(self, node: str, *, rate_kb: int = 4) -> None:
        """Bandwidth limit on one agent's link."""
        self._note(f"bandwidth {rate_kb}KB/s {node}")
        self.agents[node].proxy.narrow(rate_kb=rate_kb)

    def heal(self, node: str | None = None) -> None:
        """Remove every network fault (of one agent, or everywhere including the API link)."""
        for a in ([self.agents[node]] if node else self.agents.values()):
            a.proxy.clear()
        if node is None:
            self.api_proxy.clear()

    def heal_all(self) -> None:
        """Heal the network and start whatever is down."""
        self.heal()
        if not self.manager.running:
            self.start_manager()
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
        """Read the API, the manager's store, every agent and the mirror pods, read-only."""
        kubelet_nodes = self.kubelet_nodes()
        edgenodes = self.edgenodes()
        mirror_pods = self.mirror_pods()
        mgr = checker.observe_manager(self.manager_store)
        agents = {n: checker.observe_agent(n, a.store, a.manifest_dir, foreign=FOREIGN_FILES)
                  for n, a in self.agents.items()}
        results = {}
        if verify:
            for path in [self.manager_store, *(a.store for a in self.agents.values())]:
                results[str(path)] = checker.run_verify(path)
        return checker.Observation(tuple(edgenodes), mgr, agents, results, mirror_pods, kubelet_nodes)

    def snapshot_counts(self) -> dict[str, int]:
        """Snapshots each agent installed, from its journal."""
        return {n: len(checker.journal_snapshots(o.journal))
                for n, o in ((n, checker.observe_agent(n, a.store, a.manifest_dir)) for n, a in self.agents.items())}

    def wait_converged(self, *, timeout: float = 150.0, context: str = "") -> checker.Observation:
        """Wait until every invariant holds (statuses included), then check once more with `verify`.

        On timeout: every remaining problem, the seed, and the daemons' log tails.
        """
        last: list[str] = ["not observed yet"]
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                last = checker.problems_of(self.observe())
            except Exception as e:  # noqa: BLE001 - a store being created or an API restart: look again
                last = [f"observation failed: {e!r}"]
            if not last:
                break
            if time.monotonic() > deadline:
                raise AssertionError(checker.format_failure(last, seed=self.seed, context=f"not converged after "
                                     f"{timeout:.0f}s {context}".strip()) + "\n" + self.log_tails())
            time.sleep(1.0)
        obs = self.observe(verify=True)
        problems = checker.problems_of(obs)
        if problems:
            raise AssertionError(checker.format_failure(problems, seed=self.seed, context=context)
                                 + "\n" + self.log_tails())
        return obs


def delete_all_edgenodes(cp) -> None:
    """Delete every EdgeNode in the (private) cluster, so the next test starts empty."""
    cp.kubectl("delete", "edgenodes", "--all", "-A", "--wait=false", check=False, timeout=120)
