"""Reconnect storm: 1,000 agents, each 10 events behind, reconnect at once; time until all caught up.

Usage: python bench/reconnect_bench.py [--quick] [--agents N] [--missed N]

Manager: bench/manager_host.py (the real sync service over a LogStore). Agents:
bench/agent_load.py, N real SyncClients (own TCP connection each, default backoff: 0.5 s
doubling to 30 s, full jitter) over LMDB replicas on tmpfs, no files. The storm: the
manager stops serving (every stream breaks at once, as when the manager restarts or a
partition heals), appends --missed new versions for every node while it is down, and
serves again on the same port. Measured in the manager from the moment it serves again
until every node acknowledged its new head. No snapshot may be sent: the manager's
snapshot counter and the agents' installed-snapshot counter must not move (asserted).
Baseline (same run): the same number of events delivered to the same agents while they
stay connected, so the difference is what reconnecting costs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import Profiles, Report, percentile, python_child  # noqa: E402
from bench.fanout_bench import PODS, fill, nodes_of  # noqa: E402


def run(*, agents: int, missed: int, quick: bool, workdir: Path, shm: Path) -> Report:
    store_dir = workdir / "manager"
    nodes = nodes_of("storm", agents)
    fill(store_dir, nodes)
    host = python_child("manager_host", "manager_host.py", "--store", str(store_dir),
                        log_path=workdir / "manager_host.log")
    children = [host]
    try:
        port = host.recv(timeout=60)["port"]
        load = python_child("agent_load", "agent_load.py", "--addr", f"127.0.0.1:{port}",
                            "--nodes", f"storm:0:{agents}", "--replicas", str(shm / "replicas"),
                            log_path=workdir / "agent_load.log")
        children.append(load)
        load.recv(timeout=120)
        load.call("start")
        host.call("wait_connected", count=agents, timeout=300)
        host.call("wait_synced", nodes=nodes, timeout=300)
        base = host.call("bump", nodes=nodes, per_node=missed, pods=PODS, timeout=300)
        before = load.call("status")
        snaps_before = host.call("stats")["snapshots"]
        profiles = Profiles()
        profiles.start("reconnect-manager", host.pid)
        profiles.start("reconnect-agents", load.pid)
        t0 = time.monotonic()
        storm = host.call("restart", nodes=nodes, per_node=missed, pods=PODS, timeout=120)
        wall = time.monotonic() - t0
        profiles.stop()
        after = load.call("status")
        snaps_after = host.call("stats")["snapshots"]
    finally:
        for c in children:
            c.stop()
    installed = after["snapshots_installed"] - before["snapshots_installed"]
    if storm["snapshots"] or installed or snaps_after != snaps_before:
        raise AssertionError(f"snapshots during the storm: manager sent {storm['snapshots']}, agents installed {installed}")
    lat = storm["latencies_ms"]
    r = Report("reconnect", quick)
    r.add("agents / events missed each", f"{agents:,} / {missed}", note=f"manager down {storm['down_s']:.2f} s")
    r.add("storm: all caught up after the manager serves again", f"{storm['all_s']:.2f} s", target="< 10 s",
          met=None if quick else storm["all_s"] < 10, baseline=f"{base['all_s']:.2f} s for the same events, connected",
          note=f"wall incl. downtime {wall:.2f} s")
    r.add("per-agent catch-up p50 / p99", f"{percentile(lat, 50) / 1000:.2f} / {percentile(lat, 99) / 1000:.2f} s")
    first, last = storm["first_connect_s"], storm["last_connect_s"]
    r.add("reconnects spread (first .. last Hello)", f"{first:.2f} .. {last:.2f} s",
          note=f"{storm['reconnected']:,} agents reconnected; {after['reconnects'] - before['reconnects']:,} client retries")
    r.add("snapshots sent / installed during the storm", f"{storm['snapshots']} / {installed}", target="0", met=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 100 agents, no thresholds")
    p.add_argument("--agents", type=int, default=None)
    p.add_argument("--missed", type=int, default=10)
    a = p.parse_args()
    agents = a.agents or (100 if a.quick else 1000)
    with tempfile.TemporaryDirectory(prefix="bench-storm-", dir="/var/tmp") as tmp, \
            tempfile.TemporaryDirectory(prefix="bench-storm-", dir="/dev/shm") as shm:
        run(agents=agents, missed=a.missed, quick=a.quick, workdir=Path(tmp), shm=Path(shm)).print()


if __name__ == "__main__":
    main()
