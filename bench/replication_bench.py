"""Standby replication lag: a leader appending 1,000 events/s for 60 s; per event, standby commit time - leader append time.

Usage: python bench/replication_bench.py [--quick] [--rate N] [--seconds S] [--nodes N] [--prefill N]

Two processes (bench/manager_host.py), so leader and standby do not share one GIL:
  leader   --replicate: the real sync server with manager.replication's HighWaterMark and
           the Follow RPC; appends `rate` events/s on its event loop, one transaction every
           10 ms (rate / 100 events each, ~1 KB manifests over `nodes` nodes), waking
           streams through the high-water mark as the recorder does;
  standby  --follow: manager.following's Follower over a real gRPC channel (plaintext,
           loopback), committing with LogStore.append_records and acknowledging.
The leader holds `prefill` events before the standby starts (its first Follow copies
them). Lag per event: when the standby's transaction holding it committed minus when the
leader's transaction holding it committed (time.monotonic(), one clock machine-wide).
Also per event: when the high-water mark made it visible to agents (the standby's ack back
at the leader), polled every 1 ms. Baseline (same run): the leader's own append transaction.
CPU: both processes' CPU seconds over the sustained run, and the load average.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import Report, load_average, percentile, proc_cpu_seconds, python_child  # noqa: E402

TARGET_P99_MS = 100.0  # "small": well under one agent round trip on a loaded machine


def lags_ms(ticks: list[list[float]], commits: list[list[float]]) -> list[float]:
    """Per event: when the first commit at or past its offset happened minus its own tick's commit, in ms."""
    offsets = [int(c[0]) for c in commits]
    out: list[float] = []
    for first, last, t, *_ in ticks:
        for offset in range(int(first), int(last) + 1):
            i = bisect.bisect_left(offsets, offset)
            if i == len(offsets):
                raise AssertionError(f"offset {offset} was never committed on the other side")
            out.append((commits[i][1] - t) * 1000)
    return out


def run(*, rate: int, seconds: float, nodes: int, prefill: int, quick: bool, workdir: Path) -> Report:
    node_names = [f"rep{i:05d}" for i in range(nodes)]
    leader = python_child("leader", "manager_host.py", "--store", str(workdir / "leader"), "--replicate",
                          log_path=workdir / "leader.log")
    children = [leader]
    try:
        port = leader.recv(timeout=60)["port"]
        if prefill:
            leader.call("sustain", rate=prefill * 10, seconds=0.1, nodes=node_names, timeout=300)
        standby = python_child("standby", "manager_host.py", "--store", str(workdir / "standby"),
                               "--follow", f"127.0.0.1:{port}", "--identity", "bench-standby",
                               log_path=workdir / "standby.log")
        children.append(standby)
        standby.recv(timeout=60)
        t0 = time.monotonic()
        head0 = leader.call("replication")["head"]
        standby.call("wait_head", offset=head0, timeout=300)
        first_sync = time.monotonic() - t0
        cpu_l0, cpu_s0 = proc_cpu_seconds(leader.pid), proc_cpu_seconds(standby.pid)
        load0 = load_average()
        out = leader.call("sustain", rate=rate, seconds=seconds, nodes=node_names, timeout=seconds + 300)
        head = out["ticks"][-1][1]
        standby.call("wait_head", offset=head, timeout=120)
        cpu_l, cpu_s = proc_cpu_seconds(leader.pid) - cpu_l0, proc_cpu_seconds(standby.pid) - cpu_s0
        commits = standby.call("commits", after=head0, timeout=120)["commits"]
        stats = standby.call("stats")
        load1 = load_average()
    finally:
        for c in children:
            c.stop()
    ticks = out["ticks"]
    lag = lags_ms(ticks, commits)
    visible = lags_ms(ticks, out["visible"])
    own = [t[3] * 1000 for t in ticks]  # the leader's own append transaction, the floor of any lag
    achieved = out["events"] / out["wall_s"]
    wall = out["wall_s"]
    p50, p99, mx = percentile(lag, 50), percentile(lag, 99), max(lag)
    r = Report("replication", quick)
    r.add("events appended / rate asked / achieved", f"{out['events']:,} / {rate:,} / {achieved:,.0f} events/s",
          note=f"{seconds:g} s, one transaction per 10 ms, {nodes} nodes; load {load0} -> {load1}")
    r.add("standby lag per event (standby commit - leader commit), p50 / p99 / max",
          f"{p50:.1f} / {p99:.1f} / {mx:.1f} ms", target=f"p99 < {TARGET_P99_MS:g} ms",
          met=None if quick else p99 < TARGET_P99_MS,
          baseline=f"leader's own commit p50 / p99 {percentile(own, 50):.1f} / {percentile(own, 99):.1f} ms",
          note=f"{len(commits):,} standby commits for {len(ticks):,} leader transactions")
    r.add("  visible to agents (standby ack at the leader) - leader commit, p50 / p99 / max",
          f"{percentile(visible, 50):.1f} / {percentile(visible, 99):.1f} / {max(visible):.1f} ms",
          note="what the high-water mark adds to every change's latency to agents")
    r.add("CPU while sustaining: leader / standby", f"{cpu_l / wall:.0%} / {cpu_s / wall:.0%} of one core",
          note=f"{cpu_l * 1e6 / out['events']:.0f} / {cpu_s * 1e6 / out['events']:.0f} us per event; machine nproc 2, "
               "shared")
    r.add("standby's first sync of the prefilled log", f"{first_sync:.2f} s",
          note=f"{head0:,} events; copies taken {stats.get('copies')}")
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 10 s, no thresholds")
    p.add_argument("--rate", type=int, default=1000, help="events per second the leader appends")
    p.add_argument("--seconds", type=float, default=None, help="how long (default 60, --quick 10)")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--prefill", type=int, default=10_000, help="events in the leader's log before the standby starts")
    a = p.parse_args()
    seconds = a.seconds or (10.0 if a.quick else 60.0)
    prefill = min(a.prefill, 1000) if a.quick else a.prefill
    with tempfile.TemporaryDirectory(prefix="bench-replication-", dir="/var/tmp") as tmp:
        run(rate=a.rate, seconds=seconds, nodes=a.nodes, prefill=prefill, quick=a.quick, workdir=Path(tmp)).print()


if __name__ == "__main__":
    main()
