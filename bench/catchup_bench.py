"""Catch-up after a partition: an agent 100,000 events behind, from its Hello until it acknowledged the head.

Usage: python bench/catchup_bench.py [--quick] [--events N] [--pods N]

Two processes: bench/manager_host.py (the manager's real sync service over a LogStore on
disk) and bench/agent_load.py with ONE agent: the real SyncClient, a real ReplicaStore on
disk and the real ManifestReconciler writing the node's manifest folder on disk (what
edge-agent's after_apply does). The node runs --pods pods; while the agent is
disconnected the manager appends --events new pod versions ("churn"). Measured on the
manager side: from the agent's Hello (observer.connected) to its Ack of the head, which
the agent sends only after the replica committed and the manifests were reconciled.
Baseline, same run, same two processes: a trivial unary-stream servicer sending the same
EventBatch messages (same records, same batch size, read beforehand) to a client that
only counts events.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import Profiles, Report, pod_manifest, python_child  # noqa: E402
from eventlog import Change, LogStore, ReplicaStore  # noqa: E402
from eventlog.encoding import event_offset  # noqa: E402
from agent.reconciling import ManifestReconciler, manifest_file_name  # noqa: E402

NODE = "catchup00000"


def run(*, events: int, pods: int, quick: bool, workdir: Path, files: bool = True, rounds: int = 3) -> Report:
    store_dir = workdir / "manager"
    with LogStore(store_dir) as store:
        changes = [Change(NODE, "put", "default", f"app{i:04d}", pod_manifest(NODE, "default", f"app{i:04d}", i))
                   for i in range(pods)]
        for i in range(0, len(changes), 1000):
            store.append(changes[i : i + 1000])
    host = python_child("manager_host", "manager_host.py", "--store", str(store_dir),
                        log_path=workdir / "manager_host.log")
    agent = None
    measured: list[dict[str, float]] = []
    try:
        port = host.recv(timeout=60)["port"]
        agent = python_child("agent_load", "agent_load.py", "--addr", f"127.0.0.1:{port}", "--nodes", "catchup:0:1",
                             "--replicas", str(workdir / "replicas"), *(["--files", str(workdir / "files")] if files else []),
                             "--map-size", "2048", log_path=workdir / "agent_load.log")
        agent.recv(timeout=60)
        agent.call("start")
        host.call("wait_synced", nodes=[NODE], timeout=120)  # the first snapshot
        profiles = Profiles()
        for round_ in range(rounds):
            agent.call("stop")
            applied = host.call("stats")["head"]
            churn = host.call("churn", node=NODE, pods=pods, events=events)
            prep = host.call("raw_prepare", node=NODE, after=applied)
            assert prep["events"] == events, prep
            raw = agent.call("raw_count", expect=events)
            host.call("catchup", node=NODE)
            if round_ == rounds - 1:
                profiles.start("catchup-agent", agent.pid)
                profiles.start("catchup-manager", host.pid)
            t0 = time.monotonic()
            agent.call("start")
            done = host.call("catchup_wait", node=NODE, timeout=600)
            wall = time.monotonic() - t0
            profiles.stop()
            status = agent.call("status")
            last = status["last_reconcile"]
            measured.append({"seconds": done["seconds"], "raw_seconds": raw["seconds"], "wall": wall,
                             "snapshots": done["snapshots"] - 1, "batches": status["batches_applied"],
                             "reconcile_s": last[0] if files and last else 0.0,
                             "written": last[1] if files and last else 0, "churn_s": churn["seconds"]})
        agent.call("stop")
    finally:
        if agent is not None:
            agent.stop()
        host.stop()
    # the manifest folder holds the final state, as the replica does
    with ReplicaStore(workdir / "replicas" / NODE, readonly=True) as replica:
        final = replica.pods()
        cursor = replica.cursor()
    folder = workdir / "files" / NODE
    for (ns, name), entry in (final.items() if files else ()):
        if (folder / manifest_file_name(ns, name)).read_bytes() != entry.manifest:
            raise AssertionError(f"manifest of {ns}/{name} is not the replica's final version")
    if cursor.applied_offset != churn["head"]:
        raise AssertionError(f"replica at {cursor.applied_offset}, head {churn['head']}")

    floor = durable_floor(store_dir, workdir / "floor", events=events, pods=pods, files=files)
    rates = [events / m["seconds"] for m in measured]
    raw_rates = [events / m["raw_seconds"] for m in measured]
    ratios = [r / b for r, b in zip(rates, raw_rates)]  # paired: the same round, the same machine state
    rate, raw_rate, ratio = median(rates), median(raw_rates), median(ratios)
    each = "; ".join(f"{r:,.0f} vs {b:,.0f} ({q:.0%})" for r, b, q in zip(rates, raw_rates, ratios))
    m = sorted(measured, key=lambda x: x["seconds"])[len(measured) // 2]
    r = Report("catchup", quick)
    r.add("events behind / pods on the node", f"{events:,} / {pods:,}",
          note=f"{prep['bytes'] / events:.0f} B per event on the wire; {rounds} round(s), medians")
    r.add("catch-up (Hello -> Ack of head)", f"{m['seconds']:.2f} s",
          note=f"wall from reconnect {m['wall']:.2f} s; {m['batches']} batches so far")
    if files:
        r.add("  of which the final reconcile", f"{m['reconcile_s']:.2f} s",
              note=f"{m['written']:,} manifests written (dot-file, fsync, rename)")
    r.add("catch-up rate end to end", f"{rate:,.0f} events/s", target=">= 50,000 events/s",
          met=None if quick else rate >= 50_000, baseline=f"{raw_rate:,.0f} events/s raw batched stream")
    r.add("ratio to raw stream", f"{ratio:.0%}", target=">= 25%", met=None if quick else ratio >= 0.25,
          note=f"each round: {each}")
    r.add("floor: the same records durably written to a bare LMDB", f"{events / floor['lmdb_s']:,.0f} events/s",
          note=f"{floor['lmdb_s']:.2f} s: one put per record, a commit per {FLOOR_BATCH:,}, sync on; "
               "a replica journals every event it applies")
    if files:
        r.add("floor: the final state's files written as the reconciler does", f"{floor['files_s']:.2f} s",
              note=f"{pods:,} files by a ManifestReconciler alone (dot-file, fsync, rename; writer threads)")
    r.add("snapshots during catch-up", str(sum(int(x["snapshots"]) for x in measured)), note="1 initial snapshot not counted")
    r.add("append rate (manager, churn fill)", f"{events / m['churn_s']:,.0f} events/s", note="setup, not a target")
    return r


FLOOR_BATCH = 8192  # half the manager's window: what a catching-up agent applies per transaction


def durable_floor(store_dir: Path, workdir: Path, *, events: int, pods: int, files: bool) -> dict[str, float]:
    """What any durable replica pays for these events on this disk, measured in this run.

    The last `events` records of the node, written with a bare py-lmdb put loop (no view,
    no Python per event beyond the put) and, with files, the final state's `pods` manifests
    written into an empty folder by a ManifestReconciler with nothing else running.
    """
    with LogStore(store_dir, readonly=True) as store:
        head = store.node_state(NODE).head_offset
        records: list[bytes] = []
        after = head - events
        while True:
            batch = store.read_node_raw(NODE, after=after, limit=FLOOR_BATCH)
            if not batch:
                break
            records += batch
            after = event_offset(batch[-1])
        final = store.pods(NODE)
    workdir.mkdir(parents=True)
    env = lmdb.open(str(workdir / "lmdb"), map_size=4 << 30)
    try:
        t0 = time.perf_counter()
        for i in range(0, len(records), FLOOR_BATCH):
            with env.begin(write=True) as txn:
                for k, v in enumerate(records[i : i + FLOOR_BATCH], i):
                    txn.put(k.to_bytes(8, "big"), v)
        lmdb_s = time.perf_counter() - t0
    finally:
        env.close()
    files_s = 0.0
    if files:
        folder = workdir / "files"
        folder.mkdir()
        reconciler = ManifestReconciler(folder, desired=lambda: final)  # the agent's own writer, alone
        t0 = time.perf_counter()
        outcome = reconciler.reconcile_changes()
        files_s = time.perf_counter() - t0
        assert outcome.ok and outcome.written == len(final), outcome
    return {"lmdb_s": lmdb_s, "files_s": files_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 10,000 events, no thresholds")
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--no-files", action="store_true", help="diagnosis: after_apply writes no manifests")
    p.add_argument("--rounds", type=int, default=None, help="catch-ups measured (default 3, --quick 1)")
    a = p.parse_args()
    events = a.events or (10_000 if a.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="bench-catchup-", dir="/var/tmp") as tmp:
        rounds = a.rounds or (1 if a.quick else 3)
        run(events=events, pods=a.pods, quick=a.quick, workdir=Path(tmp), files=not a.no_files, rounds=rounds).print()


if __name__ == "__main__":
    main()
