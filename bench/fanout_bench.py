"""Fan-out: 1,000 agent streams on one manager, one change to every EdgeNode; and 10,000 idle streams.

Usage: python bench/fanout_bench.py [--quick] [--agents N] [--idle N] [--rounds N]

Manager: bench/manager_host.py, the manager's real sync service in one process. The change
is appended to its LogStore in that process (LogStore.append in transactions of 1,000
changes + LogNotifier.notify, what the recorder does per watch event), not through the
API: the API path is what the change-latency benchmark measures; here the question is
the sync service's fan-out. Agents: bench/agent_load.py, one process with N real
SyncClients (own TCP connection each) over LMDB replicas on tmpfs (/dev/shm); after_apply
writes no files. Times are taken in the manager: from before the append to each node's
Ack of its new head (observer.acknowledged).

Idle streams: raw gRPC streams in several load processes that send an in-sync agent's
Hello and then only read heartbeats (10,000 SyncClients with their LMDB environments do not
fit one process on 2 cores). Manager RSS from /proc/<pid>/status, before and with them.
Baseline (same run): the time of the append alone (the LMDB transactions), and the
manager's RSS with no stream.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import Profiles, Report, mib, percentile, pod_manifest, python_child, wait_for  # noqa: E402
from eventlog import Change, LogStore  # noqa: E402

PODS = 5
IDLE_PER_PROCESS = 2500


def nodes_of(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(count)]


def fill(store_dir: Path, nodes: list[str]) -> None:
    with LogStore(store_dir) as store:
        changes = [Change(n, "put", "default", f"app{p:04d}", pod_manifest(n, "default", f"app{p:04d}", 0))
                   for n in nodes for p in range(PODS)]
        for i in range(0, len(changes), 1000):
            store.append(changes[i : i + 1000])


def run(*, agents: int, idle: int, rounds: int, quick: bool, workdir: Path, shm: Path) -> Report:
    store_dir = workdir / "manager"
    nodes = nodes_of("fan", agents)
    fill(store_dir, nodes)
    r = Report("fanout", quick)
    host = python_child("manager_host", "manager_host.py", "--store", str(store_dir),
                        log_path=workdir / "manager_host.log")
    children = [host]
    try:
        port = host.recv(timeout=60)["port"]
        rss_empty = host.call("stats")["VmRSS"]
        load = python_child("agent_load", "agent_load.py", "--addr", f"127.0.0.1:{port}",
                            "--nodes", f"fan:0:{agents}", "--replicas", str(shm / "replicas"),
                            log_path=workdir / "agent_load.log")
        children.append(load)
        load.recv(timeout=120)
        t0 = time.monotonic()
        load.call("start")
        host.call("wait_connected", count=agents, timeout=300)
        host.call("wait_synced", nodes=nodes, timeout=300)
        initial = time.monotonic() - t0
        st0 = host.call("stats")
        results = []
        profiles = Profiles()
        profiles.start("fanout-manager", host.pid)
        profiles.start("fanout-agents", load.pid)
        for _ in range(rounds):
            results.append(host.call("bump", nodes=nodes, per_node=1, pods=PODS, timeout=120))
            time.sleep(0.5)
        profiles.stop()
        st1 = host.call("stats")
        lat = [x for res in results for x in res["latencies_ms"]]
        all_s = [res["all_s"] for res in results]
        append_s = [res["append_s"] for res in results]
        cpu = [res["cpu_s"] for res in results]
        worst = max(all_s)
        r.add("streams / pods per node", f"{agents:,} / {PODS}",
              note=f"initial sync ({agents:,} snapshots) {initial:.1f} s")
        r.add(f"one change to every node: all acknowledged (median of {rounds})",
              f"{statistics.median(all_s) * 1000:.0f} ms", target="<= 2 s", met=None if quick else worst <= 2.0,
              baseline=f"append alone {statistics.median(append_s) * 1000:.0f} ms",
              note=f"worst round {worst * 1000:.0f} ms")
        r.add("per-node ack latency p50 / p99", f"{percentile(lat, 50):.0f} / {percentile(lat, 99):.0f} ms",
              note=f"{len(lat):,} acks over {rounds} rounds")
        r.add("manager CPU per round", f"{statistics.median(cpu):.2f} s", note="user+sys of the manager process")
        r.add("manager RSS / peak RSS with streams", f"{mib(st1['VmRSS']):.0f} / {mib(st1['VmHWM']):.0f} MiB",
              baseline=f"{mib(rss_empty):.0f} MiB with no stream",
              note=f"snapshots during rounds: {st1['snapshots'] - st0['snapshots']}")
        load.call("stop")
        load.stop()
        children.remove(load)

        # -- idle streams -------------------------------------------------------------------
        wait_for(lambda: host.call("stats")["connected"] == 0, timeout=60, what="streams to close")
        rss_before = host.call("stats")["VmRSS"]
        states = workdir / "states.json"
        host.call("states", path=str(states))
        per = min(IDLE_PER_PROCESS, idle)
        t0 = time.monotonic()
        for first in range(0, idle, per):
            c = python_child(f"idle_{first}", "agent_load.py", "--addr", f"127.0.0.1:{port}",
                             "--nodes", f"idle:{first}:{min(per, idle - first)}", "--raw-idle", str(states),
                             log_path=workdir / f"idle_{first}.log")
            children.append(c)
            c.recv(timeout=120)
            c.call("start")
        host.call("wait_connected", count=idle, timeout=600)
        connect_s = time.monotonic() - t0
        time.sleep(3.0)  # a few heartbeats' worth of settling
        st = host.call("stats")
        per_stream = (st["VmRSS"] - rss_before) / idle
        r.add(f"{idle:,} idle streams: manager RSS", f"{mib(st['VmRSS']):.0f} MiB", target="< 1 GiB",
              met=None if quick else st["VmRSS"] < 1024 * 1024,
              baseline=f"{mib(rss_before):.0f} MiB before they connected",
              note=f"{per_stream:.0f} KiB per stream; connected in {connect_s:.1f} s by {len(children) - 1} processes")
    finally:
        for c in children:
            c.stop()
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 100 agents, 500 idle streams, no thresholds")
    p.add_argument("--agents", type=int, default=None)
    p.add_argument("--idle", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    a = p.parse_args()
    agents = a.agents or (100 if a.quick else 1000)
    idle = a.idle or (500 if a.quick else 10_000)
    rounds = a.rounds or (2 if a.quick else 5)
    with tempfile.TemporaryDirectory(prefix="bench-fanout-", dir="/var/tmp") as tmp, \
            tempfile.TemporaryDirectory(prefix="bench-fanout-", dir="/dev/shm") as shm:
        run(agents=agents, idle=idle, rounds=rounds, quick=a.quick, workdir=Path(tmp), shm=Path(shm)).print()


if __name__ == "__main__":
    main()
