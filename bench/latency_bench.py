"""Change latency: from `kubectl apply` of an EdgeNode change to the new manifest file on the edge node.

Usage: python bench/latency_bench.py [--quick] [--nodes N] [--real-agents N] [--changes N]

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
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
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


def run(*, nodes: int, real_agents: int, changes: int, verbs: list[str], quick: bool, workdir: Path) -> Report:
    t0 = time.monotonic()
    r = Report("latency", quick)
    rev = 0
    with EdgeCluster(workdir, nodes=nodes, real_agents=real_agents, pods=PODS) as cluster:
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
                out.append(seen * 1000)
                kubectl.append(applied * 1000)
                lead.append((seen - applied) * 1000)
            report_verb(r, verb, lat_real, lat_sim, kubectl, lead, quick=quick)
    return r


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
    p.add_argument("--verb", choices=[*VERBS, "all"], default="all",
                   help="kubectl apply -f - of the whole EdgeNode (client-side), the same with --server-side, "
                        "kubectl patch --type=json of one label, or all (default: --changes of each, same cluster)")
    a = p.parse_args()
    nodes = a.nodes or (20 if a.quick else 100)
    real = a.real_agents if a.real_agents is not None else (2 if a.quick else 10)
    changes = a.changes or (10 if a.quick else 200)
    with tempfile.TemporaryDirectory(prefix="bench-latency-", dir="/var/tmp") as tmp:
        run(nodes=nodes, real_agents=real, changes=changes, verbs=list(VERBS) if a.verb == "all" else [a.verb], quick=a.quick, workdir=Path(tmp)).print()


if __name__ == "__main__":
    main()
