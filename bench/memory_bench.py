"""Memory: agent RSS with 1,000 pods in its replica; manager RSS with a 1,000,000-event log and 10,000 EdgeNodes.

Usage: python bench/memory_bench.py [--quick] [--pods N] [--events N] [--nodes N]

Agent: a real `edge-agent` process (python -m agent.main) that installed a 1,000-pod
snapshot of its node (1 KB manifests) and wrote the 1,000 manifest files; baseline in the
same run: an `edge-agent` of a node with no pods, next to it.
Manager: bench/manager_host.py (the manager's real sync service; `edge-manager` itself
would need an API server holding the 10,000 EdgeNodes, or it would record their deletion
on its first list) over a LogStore filled directly with --events events over --nodes
nodes (10 pods each, new versions round-robin), serving one idle in-sync stream per node
(raw streams resuming at the node's head, as in the fan-out benchmark). Baseline: the same
host over an empty log. RSS counts the LMDB pages the process touched (RssFile, shared
page cache) as well as its own heap (RssAnon); both are shown.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import (  # noqa: E402
    PYTHON, REPO, Report, _die_with_parent, mib, pod_manifest, proc_status, python_child, wait_for,
)
from eventlog import Change, LogStore  # noqa: E402

PODS_PER_NODE = 10
IDLE_PER_PROCESS = 2500


def fill_manager(store_dir: Path, *, events: int, nodes: int) -> float:
    """events puts over nodes x PODS_PER_NODE pods, node-interleaved; returns seconds."""
    t0 = time.monotonic()
    with LogStore(store_dir) as store:
        batch: list[Change] = []
        for i in range(events):
            node = f"idle{i % nodes:05d}"
            name = f"app{(i // nodes) % PODS_PER_NODE:04d}"
            batch.append(Change(node, "put", "default", name, pod_manifest(node, "default", name, i)))
            if len(batch) == 2000:
                store.append(batch)
                batch = []
        if batch:
            store.append(batch)
    return time.monotonic() - t0


def start_agent(node: str, port: int, workdir: Path) -> subprocess.Popen:
    folder = workdir / "files" / node
    folder.mkdir(parents=True)
    log = open(workdir / f"agent-{node}.log", "ab")
    return subprocess.Popen(
        [PYTHON, "-m", "agent.main", "--node-name", node, "--sync-server", f"127.0.0.1:{port}",
         "--pod-manifest-path", str(folder), "--data-dir", str(workdir / "agents" / node), "--insecure",
         "--log-level", "warning"],
        cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_die_with_parent)


def agent_part(r: Report, *, pods: int, workdir: Path) -> None:
    store_dir = workdir / "agent-manager"
    node, empty = "mem-agent", "mem-empty"
    with LogStore(store_dir) as store:
        store.append([Change(node, "put", "default", f"app{i:04d}", pod_manifest(node, "default", f"app{i:04d}", i))
                      for i in range(pods)])
    host = python_child("manager_host", "manager_host.py", "--store", str(store_dir),
                        log_path=workdir / "agent-host.log")
    agents: list[subprocess.Popen] = []
    try:
        port = host.recv(timeout=60)["port"]
        agents = [start_agent(node, port, workdir), start_agent(empty, port, workdir)]
        host.call("wait_connected", count=2, timeout=120)
        host.call("wait_synced", nodes=[node, empty], timeout=120)
        folder = workdir / "files" / node
        wait_for(lambda: len(list(folder.iterdir())) >= pods, timeout=60, what="the agent's manifest files")
        time.sleep(1.0)
        full, base = proc_status(agents[0].pid), proc_status(agents[1].pid)
    finally:
        for a in agents:
            a.terminate()
        for a in agents:
            try:
                a.wait(timeout=10)
            except subprocess.TimeoutExpired:
                a.kill()
        host.stop()
    r.add(f"edge-agent RSS with {pods:,} pods", f"{mib(full['VmRSS']):.0f} MiB",
          baseline=f"{mib(base['VmRSS']):.0f} MiB with 0 pods",
          note=f"anon {mib(full['RssAnon']):.0f} MiB, LMDB/file pages {mib(full['RssFile']):.0f} MiB; "
               f"+{(full['VmRSS'] - base['VmRSS']) / pods:.1f} KiB per pod")


def manager_part(r: Report, *, events: int, nodes: int, workdir: Path) -> None:
    store_dir = workdir / "manager"
    fill_s = fill_manager(store_dir, events=events, nodes=nodes)
    (workdir / "empty").mkdir()
    LogStore(workdir / "empty" / "log").close()
    host = python_child("manager_host", "manager_host.py", "--store", str(store_dir),
                        log_path=workdir / "manager_host.log")
    empty = python_child("manager_host_empty", "manager_host.py", "--store", str(workdir / "empty" / "log"),
                         log_path=workdir / "manager_host_empty.log")
    children = [host, empty]
    try:
        port = host.recv(timeout=120)["port"]
        empty.recv(timeout=60)
        idle_rss = host.call("stats")
        base = empty.call("stats")
        states = workdir / "states.json"
        host.call("states", path=str(states))
        for first in range(0, nodes, IDLE_PER_PROCESS):
            c = python_child(f"idle_{first}", "agent_load.py", "--addr", f"127.0.0.1:{port}",
                             "--nodes", f"idle:{first}:{min(IDLE_PER_PROCESS, nodes - first)}",
                             "--raw-idle", str(states), log_path=workdir / f"idle_{first}.log")
            children.append(c)
            c.recv(timeout=120)
            c.call("start")
        host.call("wait_connected", count=nodes, timeout=600)
        time.sleep(3.0)
        st = host.call("stats")
        if st["snapshots"]:
            raise AssertionError(f"{st['snapshots']} idle streams got a snapshot instead of resuming")
    finally:
        for c in children:
            c.stop()
    size_mib = sum(f.stat().st_size for f in store_dir.iterdir()) / 2**20
    r.add(f"manager RSS, {events:,}-event log, {nodes:,} nodes, {nodes:,} streams", f"{mib(st['VmRSS']):.0f} MiB",
          baseline=f"{mib(base['VmRSS']):.0f} MiB with an empty log, no stream",
          note=f"anon {mib(st['RssAnon']):.0f} MiB, LMDB pages {mib(st['RssFile']):.0f} MiB; "
               f"{mib(idle_rss['VmRSS']):.0f} MiB before the streams; log file {size_mib:,.0f} MiB")
    r.add("log fill (setup)", f"{events / fill_s:,.0f} events/s", note=f"{fill_s:.0f} s, batches of 2,000")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 100,000 events over 1,000 nodes")
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--nodes", type=int, default=None)
    a = p.parse_args()
    events = a.events or (100_000 if a.quick else 1_000_000)
    nodes = a.nodes or (1_000 if a.quick else 10_000)
    r = Report("memory", a.quick)
    with tempfile.TemporaryDirectory(prefix="bench-memory-", dir="/var/tmp") as tmp:
        agent_part(r, pods=a.pods, workdir=Path(tmp))
        manager_part(r, events=events, nodes=nodes, workdir=Path(tmp))
    r.print()


if __name__ == "__main__":
    main()
