"""Change latency: from `kubectl apply` of an EdgeNode change to the new manifest file on the edge node.

Usage: python bench/latency_bench.py [--quick] [--nodes N] [--real-agents N] [--changes N] [--kubelet-changes N]

System (bench/cluster.py): etcd + kube-apiserver, the EdgeNode CRD, 100 EdgeNodes of 3
pods, a real `edge-manager`, 10 real `edge-agent` processes and 90 simulated agents in
one load process (real SyncClient + ReplicaStore + ManifestReconciler writing files, as
edge-agent does; 100 Python agent processes would not fit 2 cores). Each change is a
`kubectl apply -f -` of one EdgeNode with a new label value on pod p0 and, in the same run,
the same with `--server-side` (one PATCH; kubectl skips the OpenAPI v2 download and parse a
client-side apply does on every run) and a `kubectl patch --type=json` of that label (one
PATCH, no GET); changes alternate
between nodes of real and simulated agents, one at a time. The clock starts just before
kubectl is spawned and stops when this process, polling that one file every ~1 ms, reads
the new content (the reconciler renames files into place, so a read sees old or new).
Baseline (same run): the duration of the `kubectl apply` processes alone (the floor any
change pays), and for scale the original's 10 s polling (mean 5 s).

To the end (`kubectl apply -f` -> mirror pod Running): one real agent's node also runs a
hollow kubelet (kubemark: kubelet code, fake container runtime) on its manifest folder. Two
kinds of change, each timed from kubectl's spawn to its manifest file (its mtime: the agent's
write) and on to the first watch event that shows the mirror pod with the new label Running
and ready: a new pod `k<n>` added, and a changed pod p0 (a new label). Each is a `kubectl
apply -f` of the whole EdgeNode from a file (--kubelet-verb patch: a `kubectl patch` of the
one edit; both: each, same cluster). Kubelet's own share is the second interval (manifest
file written -> mirror pod Running), measured on the same changes. A changed static pod gets
a new UID, so kubelet first stops the old pod, then starts the new one on a later pass of its
sync loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import Report, percentile  # noqa: E402
from bench.cluster import NAMESPACE, REV_LABEL, EdgeCluster, edgenode, manifest_path  # noqa: E402

PODS = 3
VERBS = ("apply", "apply-ssa", "patch")  # how users change an EdgeNode with kubectl
POLL_SECONDS = 0.001


def one_change(cluster: EdgeCluster, node: str, rev: int, *, verb: str) -> tuple[float, float]:
    """(seconds until the file has the new content, seconds the kubectl command took)."""
    if verb in ("apply", "apply-ssa"):
        body = json.dumps(edgenode(node, pods=PODS, rev=rev)).encode()
        args = ["apply", "-f", "-"] if verb == "apply" else ["apply", "--server-side", "-f", "-"]
    else:  # a JSON patch of the one label: kubectl sends a single PATCH, no GET first
        patch = [{"op": "replace", "path": f"/spec/pods/0/metadata/labels/{REV_LABEL}", "value": f"r{rev}"}]
        args, body = ["patch", "edgenode", node, "-n", NAMESPACE, "--type=json", "-p", json.dumps(patch)], b""
    path = manifest_path(cluster.files, node, "p0")
    want = f'"{REV_LABEL}":"r{rev}"'.encode()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cluster.kubectl_cmd(*args), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(body)
    proc.stdin.close()
    seen = applied = None
    deadline = t0 + 60
    while seen is None or applied is None:
        now = time.perf_counter()
        if applied is None and proc.poll() is not None:
            applied = now - t0
            if proc.returncode != 0:
                raise RuntimeError(f"kubectl {verb} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        if seen is None:
            try:
                if want in path.read_bytes():
                    seen = time.perf_counter() - t0
            except FileNotFoundError:
                pass
        if now > deadline:
            raise TimeoutError(f"change r{rev} of {node} did not reach {path} within 60 s")
        time.sleep(POLL_SECONDS)
    if proc.stderr:
        proc.stderr.close()
    return seen, applied


class RunningWatch:
    """Watches the bench namespace's pods; records when each (pod, revision label) was first seen Running and ready."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self._api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self._seen: dict[tuple[str, str], float] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="running-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                for ev in watch.Watch().stream(self._api.list_namespaced_pod, NAMESPACE, timeout_seconds=30):
                    pod = ev["object"]
                    statuses = pod.status.container_statuses or []
                    if ev["type"] != "DELETED" and pod.status.phase == "Running" and statuses \
                            and all(c.ready for c in statuses):
                        key = (pod.metadata.name, (pod.metadata.labels or {}).get(REV_LABEL, ""))
                        with self._cond:
                            self._seen.setdefault(key, time.perf_counter())
                            self._cond.notify_all()
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - a broken watch: list and watch again
                time.sleep(0.2)

    def wait(self, pod: str, rev: str, *, deadline: float) -> float:
        """perf_counter time at which pod was first seen Running with label rev."""
        with self._cond:
            while (pod, rev) not in self._seen:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(f"mirror pod {pod} with {REV_LABEL}={rev} not Running in time")
                self._cond.wait(left)
            return self._seen[(pod, rev)]

    def stop(self) -> None:
        self._stop.set()


def kubelet_step(cluster: EdgeCluster, watch: RunningWatch, node: str, rev: int, *, verb: str, what: str,
                 state: dict) -> tuple[float, float]:
    """One change on the hollow kubelet's node: (seconds until its manifest file is written, until it is Running).

    `what` is "new pod" (a pod k<rev> added) or "changed pod" (pod p0 given label r<rev>); `verb` is
    "apply" (`kubectl apply -f` of the whole EdgeNode from a file, as a user edits and applies it)
    or "patch" (`kubectl patch --type=json` of that one edit). `state` holds the node's p0 revision
    and the k-pods added so far, so an applied EdgeNode changes only what the step changes.
    """
    if what == "new pod":
        name = f"k{rev}"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {REV_LABEL: f"r{rev}"}},
               "spec": {"containers": [{"name": "c", "image": "registry.example.com/k:1.0"}]}}
        state["added"].append(pod)
        patch = [{"op": "add", "path": "/spec/pods/-", "value": pod}]
    else:
        name = "p0"
        state["p0_rev"] = rev
        patch = [{"op": "replace", "path": f"/spec/pods/0/metadata/labels/{REV_LABEL}", "value": f"r{rev}"}]
    if verb == "apply":
        obj = edgenode(node, pods=PODS, rev=state["p0_rev"])
        obj["spec"]["pods"] += state["added"]
        applied = cluster.workdir / f"edgenode-{node}.json"
        applied.write_text(json.dumps(obj))
        args = ["apply", "-f", str(applied)]
    else:
        args = ["patch", "edgenode", node, "-n", NAMESPACE, "--type=json", "-p", json.dumps(patch)]
    path = manifest_path(cluster.files, node, name)
    want = f'"{REV_LABEL}":"r{rev}"'.encode()
    t0, wall0 = time.perf_counter(), time.time()
    proc = subprocess.run(cluster.kubectl_cmd(*args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {verb} failed: {proc.stderr}")
    while True:
        try:
            if want in path.read_bytes():
                break
        except FileNotFoundError:
            pass
        if time.perf_counter() - t0 > 60:
            raise TimeoutError(f"{path} not written with {REV_LABEL}=r{rev} within 60 s")
        time.sleep(POLL_SECONDS)
    written = path.stat().st_mtime - wall0  # the agent's write: it renames a finished temp file into place
    t_running = watch.wait(f"{name}-{node}", f"r{rev}", deadline=time.perf_counter() + 120)
    return written, t_running - t0


def run(*, nodes: int, real_agents: int, changes: int, verbs: list[str], quick: bool, workdir: Path,
        kubelet_changes: int = 0, kubelet_verbs: tuple[str, ...] = ("apply",)) -> Report:
    t0 = time.monotonic()
    r = Report("latency", quick)
    rev = 0
    p0_revs: dict[str, int] = {}  # each node's p0 revision label, for an apply of the whole EdgeNode
    kubelets = 1 if kubelet_changes and real_agents else 0
    with EdgeCluster(workdir, nodes=nodes, real_agents=real_agents, pods=PODS, kubelets=kubelets) as cluster:
        setup = time.monotonic() - t0
        r.add("EdgeNodes / real edge-agents / simulated agents", f"{nodes} / {real_agents} / {nodes - real_agents}",
              note=f"{PODS} pods each; setup {setup:.0f} s")
        real = cluster.nodes[:real_agents]
        simulated = cluster.nodes[real_agents:]
        for verb in verbs:
            lat_real: list[float] = []
            lat_sim: list[float] = []
            kubectl: list[float] = []
            lead: list[float] = []  # file seen minus kubectl exit: what the system adds after the command returned
            for i in range(changes):
                group, out = (real, lat_real) if i % 2 == 0 and real else (simulated, lat_sim)
                node = group[(i // 2) % len(group)]
                rev += 1
                seen, applied = one_change(cluster, node, rev=rev, verb=verb)
                p0_revs[node] = rev
                out.append(seen * 1000)
                kubectl.append(applied * 1000)
                lead.append((seen - applied) * 1000)
            report_verb(r, verb, lat_real, lat_sim, kubectl, lead, quick=quick)
        if kubelets:
            watch = RunningWatch(cluster.cp.kubeconfig)
            try:
                node = cluster.kubelet_nodes[0]
                state = {"p0_rev": p0_revs.get(node, 0), "added": []}
                for kverb in kubelet_verbs:
                    for what in ("new pod", "changed pod"):
                        to_file: list[float] = []
                        to_running: list[float] = []
                        for _ in range(kubelet_changes):
                            rev += 1
                            f, running = kubelet_step(cluster, watch, node, rev, verb=kverb, what=what, state=state)
                            to_file.append(f * 1000)
                            to_running.append(running * 1000)
                        report_kubelet(r, kverb, what, to_file, to_running)
            finally:
                watch.stop()
    return r


def report_kubelet(r: Report, verb: str, what: str, to_file: list[float], to_running: list[float]) -> None:
    """kubectl -> mirror pod Running, and how it splits between k8s-edge and kubelet (same changes)."""
    kubelet = [b - a for a, b in zip(to_file, to_running)]
    p50, p99 = percentile(to_running, 50), percentile(to_running, 99)
    f50, f99 = percentile(to_file, 50), percentile(to_file, 99)
    k50, k99 = percentile(kubelet, 50), percentile(kubelet, 99)
    command = "kubectl apply -f" if verb == "apply" else "kubectl patch"
    r.add(f"{command} ({what}) -> mirror pod Running (hollow kubelet), p50 / p99 ({len(to_running)} changes)",
          f"{p50:.0f} / {p99:.0f} ms", baseline=f"{command} -> manifest file {f50:.0f} / {f99:.0f} ms",
          note=f"kubelet's share at p50 {k50 / p50:.0%}, at p99 {k99 / p99:.0%}")
    r.add(f"  {what}: kubelet's share, manifest file written -> mirror pod Running, p50 / p99",
          f"{k50:.0f} / {k99:.0f} ms",
          note="kubemark's hollow kubelet: kubelet code, fake container runtime (no image pull, no process)")


def report_verb(r: Report, verb: str, lat_real: list[float], lat_sim: list[float], kubectl: list[float],
                lead: list[float], *, quick: bool) -> None:
    lat = lat_real + lat_sim
    verb = {"apply-ssa": "apply --server-side"}.get(verb, verb)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    k50, k99 = percentile(kubectl, 50), percentile(kubectl, 99)
    r.add(f"kubectl {verb} -> manifest file, p50 / p99 ({len(lat)} changes)", f"{p50:.0f} / {p99:.0f} ms",
          target="p99 < 250 ms", met=None if quick else p99 < 250,
          baseline=f"kubectl {verb} alone {k50:.0f} / {k99:.0f} ms",
          note=f"latency / kubectl at p50 {p50 / k50:.2f}, at p99 {p99 / k99:.2f}")
    r.add(f"  {verb}: file written after kubectl exited, p50 / p99",
          f"{percentile(lead, 50):+.0f} / {percentile(lead, 99):+.0f} ms",
          note="negative: the file was there before the kubectl process ended")
    if lat_real:
        r.add(f"  {verb}: real edge-agent nodes, p50 / p99",
              f"{percentile(lat_real, 50):.0f} / {percentile(lat_real, 99):.0f} ms", note=f"{len(lat_real)} changes")
    r.add(f"  {verb}: simulated-agent nodes, p50 / p99",
          f"{percentile(lat_sim, 50):.0f} / {percentile(lat_sim, 99):.0f} ms", note=f"{len(lat_sim)} changes")
    r.add(f"  {verb}: mean latency vs the original's polling", f"{statistics.mean(lat):.0f} ms",
          baseline="original: 10 s polling, mean 5,000 ms", note=f"{5000 / statistics.mean(lat):.0f}x faster")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 20 EdgeNodes, 10 changes per verb, no thresholds")
    p.add_argument("--nodes", type=int, default=None)
    p.add_argument("--real-agents", type=int, default=None)
    p.add_argument("--changes", type=int, default=None)
    p.add_argument("--kubelet-changes", type=int, default=None,
                   help="new pods and changed pods (each) timed to the mirror pod Running on a hollow kubelet's node "
                        "(0: no kubelet; default 20, --quick 3)")
    p.add_argument("--verb", choices=[*VERBS, "all"], default="all",
                   help="kubectl apply -f - of the whole EdgeNode (client-side), the same with --server-side, "
                        "kubectl patch --type=json of one label, or all (default: --changes of each, same cluster)")
    p.add_argument("--kubelet-verb", choices=["apply", "patch", "both"], default="apply",
                   help="how the hollow kubelet's node is changed: kubectl apply -f of the whole EdgeNode (default), "
                        "kubectl patch --type=json of the one edit, or both (apply first, same cluster)")
    a = p.parse_args()
    nodes = a.nodes or (20 if a.quick else 100)
    real = a.real_agents if a.real_agents is not None else (2 if a.quick else 10)
    changes = a.changes or (10 if a.quick else 200)
    kubelet_changes = a.kubelet_changes if a.kubelet_changes is not None else (3 if a.quick else 20)
    with tempfile.TemporaryDirectory(prefix="bench-latency-", dir="/var/tmp") as tmp:
        run(nodes=nodes, real_agents=real, changes=changes, verbs=list(VERBS) if a.verb == "all" else [a.verb],
            quick=a.quick, workdir=Path(tmp), kubelet_changes=kubelet_changes,
            kubelet_verbs=("apply", "patch") if a.kubelet_verb == "both" else (a.kubelet_verb,)).print()


if __name__ == "__main__":
    main()
