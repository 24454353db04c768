"""Benchmark of the event log: durable batched append vs a raw LMDB put loop, replay, apply, snapshot, audit reads.

Usage: python bench/eventlog_bench.py [--quick]

Prints one table. Appends are durable (LMDB's default sync on every commit) in
batches of 256 events with ~1 KB canonical pod manifests spread over many nodes.
The baseline writes the same encoded records with a plain py-lmdb put loop, one
transaction per batch, so the ratio is the cost of the view, index and digests.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventlog import Change, Event, LogStore, ReplicaStore, Snapshot, encode_event  # noqa: E402
from eventlog.encoding import u64  # noqa: E402
from eventlog.export import export_range  # noqa: E402
from eventlog.replay import log_state_at  # noqa: E402
from eventlog.stats import store_stats  # noqa: E402
from eventlog.verify import verify_log  # noqa: E402
from bench.benchlib import pod_manifest  # noqa: E402

BATCH = 256
RUNS = 3


manifest = pod_manifest  # the same ~1 KB manifest every benchmark writes


def make_changes(n: int, *, nodes: int, pods_per_node: int, grouped: bool) -> list[Change]:
    """n puts over nodes x pods, each a new manifest version.

    grouped: a node's pods follow each other (an EdgeNode rollout: what the recorder
    appends); else every event is for the next node (worst case for the per-node
    index and the view: each batch touches a page per node).
    """
    out = []
    for i in range(n):
        if grouped:
            node, pod = f"edge{(i // pods_per_node) % nodes:03d}", f"app{i % pods_per_node:03d}"
        else:
            node, pod = f"edge{i % nodes:03d}", f"app{(i // nodes) % pods_per_node:03d}"
        out.append(Change(node, "put", "default", pod, manifest(node, "default", pod, i)))
    return out


def bench_append(tmp: Path, changes: list[Change], *, sync: bool = True) -> tuple[float, float]:
    """Seconds for LogStore.append of all changes in batches, and the mean record size.

    sync=False (not durable) only splits CPU from commit I/O for the analysis.
    """
    real_open = lmdb.open
    if not sync:  # the store opens its environment through lmdb.open: ask it for no fsync
        lmdb.open = lambda *a, **k: real_open(*a, **{**k, "sync": False})
    try:
        store = LogStore(tmp / "log")
    finally:
        lmdb.open = real_open
    with store:
        t0 = time.perf_counter()
        for i in range(0, len(changes), BATCH):
            store.append(changes[i : i + BATCH])
        dt = time.perf_counter() - t0
        assert store.head_offset == len(changes)
    sizes = [len(encode_event(Event(1, 0, c.node, c.op, c.namespace, c.name, c.manifest, c.source))) for c in changes[:1000]]
    return dt, sum(sizes) / len(sizes)


def bench_append_records(src: Path, dest: Path) -> float:
    """Seconds for LogStore.append_records of every record of the store at src (a standby following it), durable."""
    with LogStore(src, readonly=True) as store, store.reader() as r:
        records = [v for _, v in r.records()]
    with LogStore(dest) as store:
        t0 = time.perf_counter()
        for i in range(0, len(records), BATCH):
            store.append_records(records[i : i + BATCH])
        dt = time.perf_counter() - t0
        assert store.head_offset == len(records)
    return dt


def bench_raw(tmp: Path, changes: list[Change]) -> float:
    """Seconds for a plain py-lmdb put loop of the same encoded records, one txn per batch, sync on."""
    now = time.time_ns()
    records = [
        (u64(i + 1), encode_event(Event(i + 1, now, c.node, c.op, c.namespace, c.name, c.manifest, c.source)))
        for i, c in enumerate(changes)
    ]
    (tmp / "raw").mkdir(parents=True)
    env = lmdb.open(str(tmp / "raw"), map_size=1 << 30, max_dbs=2)
    db = env.open_db(b"log")
    try:
        t0 = time.perf_counter()
        for i in range(0, len(records), BATCH):
            with env.begin(write=True) as txn:
                for k, v in records[i : i + BATCH]:
                    txn.put(k, v, db=db)
        return time.perf_counter() - t0
    finally:
        env.close()


def bench_replay(tmp: Path, n: int) -> float:
    """Events per second reading one node's events (read_node + decode) from offset 0."""
    with LogStore(tmp / "replay") as store:
        changes = []
        for i in range(n):
            # one hot node among a few others, so the per-node index matters
            node = "edge-hot" if i % 4 else f"edge{i % 7}"
            changes.append(Change(node, "put", "default", f"app{i % 500:03d}", manifest(node, "default", f"app{i % 500}", i)))
        for i in range(0, n, BATCH):
            store.append(changes[i : i + BATCH])
        expected = sum(1 for c in changes if c.node == "edge-hot")
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            after, seen = 0, 0
            while True:
                events = store.read_node("edge-hot", after=after, limit=BATCH)
                if not events:
                    break
                seen += len(events)
                after = events[-1].offset
            dt = time.perf_counter() - t0
            assert seen == expected, (seen, expected)
            best = max(best, seen / dt)
        return best


def bench_apply(tmp: Path, n: int) -> float:
    """Events per second a replica applies framed events in batches (the agent's hot path), best of three."""
    with LogStore(tmp / "apply-log") as store:
        for i in range(0, n, BATCH):
            store.append([Change("edge-a", "put", "default", f"app{j % 500:03d}", manifest("edge-a", "default", f"app{j % 500}", j))
                          for j in range(i, i + BATCH)])
        records, after = [], 0
        while batch := store.read_node_raw("edge-a", after=after, limit=BATCH):
            records.append(batch)
            after += len(batch)
        log_id = store.log_id
    best = 0.0
    for run in range(3):
        with ReplicaStore(tmp / f"apply-replica{run}", node="edge-a") as replica:
            replica.install_snapshot(Snapshot(log_id, "edge-a", 0, 0, ()))
            t0 = time.perf_counter()
            for batch in records:
                replica.apply_records(batch, log_id=log_id)
            best = max(best, n / (time.perf_counter() - t0))
        shutil.rmtree(tmp / f"apply-replica{run}")
    return best


def bench_audit(tmp: Path) -> dict[str, float]:
    """Seconds edge-eventlog's reads take on the replay benchmark's log (verify, stats, state, export), best of three."""
    out: dict[str, float] = {}
    with LogStore(tmp / "replay", readonly=True) as store:
        head = store.head_offset
        reads = {
            "verify": lambda: verify_log(store),
            "stats": lambda: store_stats(store),
            "state": lambda: log_state_at(store, "edge-hot", head),
            "export": lambda: export_range(store, io.BytesIO(), first=store.first_offset, last=head),
        }
        for name, fn in reads.items():
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[name] = min(times)
    return out


def bench_snapshot(tmp: Path, pods: int) -> tuple[float, float]:
    """Seconds to take a snapshot of a node with `pods` pods, and to install it in a replica."""
    with LogStore(tmp / "snap") as store:
        changes = [Change("edge-big", "put", "default", f"app{i:05d}", manifest("edge-big", "default", f"app{i}", i)) for i in range(pods)]
        for i in range(0, pods, BATCH):
            store.append(changes[i : i + BATCH])
        t0 = time.perf_counter()
        snap = store.snapshot("edge-big")
        take = time.perf_counter() - t0
        assert len(snap.pods) == pods
    with ReplicaStore(tmp / "replica", node="edge-big") as replica:
        t0 = time.perf_counter()
        replica.install_snapshot(snap)
        install = time.perf_counter() - t0
    return take, install


def main() -> None:
    """Run every measurement and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events, for a smoke run")
    ap.add_argument("--dir", help="where to put the stores (default: a temporary directory)")
    args = ap.parse_args()
    n = 25_600 if args.quick else 102_400
    nodes, pods_per_node = 200, 50
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="eventlog-bench-", dir=args.dir))
    rows = [
        ("machine", f"{os.cpu_count()} cpus, {platform.machine()}, Python {platform.python_version()}, "
                    f"py-lmdb {lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))})"),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg()) + "  (figures need an idle machine)"),
    ]
    try:
        for grouped in (True, False):
            label = "grouped by node" if grouped else "interleaved nodes"
            changes = make_changes(n, nodes=nodes, pods_per_node=pods_per_node, grouped=grouped)
            # best of three runs each, alternating, so neither side wins by a warmer page cache or a
            # quieter moment of a shared disk; every pair's ratio is printed too
            raw_s, append_s, follow_s = [], [], []
            for i in range(RUNS):
                raw_s.append(bench_raw(tmp / f"r{grouped}{i}", changes))
                dt, rec_size = bench_append(tmp / f"a{grouped}{i}", changes)
                append_s.append(dt)
                if grouped:  # a standby storing the same events as the leader appended them
                    follow_s.append(bench_append_records(tmp / f"a{grouped}{i}" / "log", tmp / f"f{i}"))
                    shutil.rmtree(tmp / f"f{i}")
                shutil.rmtree(tmp / f"r{grouped}{i}")
                shutil.rmtree(tmp / f"a{grouped}{i}")
            append_rate, raw_rate = n / min(append_s), n / min(raw_s)
            pairs = ", ".join(f"{r / a:.0%}" for a, r in zip(append_s, raw_s))
            rows += [
                (f"workload ({label})", f"{n} puts, batches of {BATCH}, {nodes} nodes x {pods_per_node} pods, "
                                        f"~{rec_size:.0f} B per record, sync on"),
                ("  durable append (LogStore.append)", f"{append_rate:,.0f} events/s"),
                ("  raw LMDB put loop (baseline)", f"{raw_rate:,.0f} events/s"),
                ("  append / raw", f"{append_rate / raw_rate:.0%}  (target >= 50%; each run: {pairs})"),
            ]
            if grouped:
                follow_pairs = ", ".join(f"{a / f:.0%}" for a, f in zip(append_s, follow_s))
                rows += [
                    ("  standby append (LogStore.append_records)", f"{n / min(follow_s):,.0f} events/s"),
                    ("  append_records / append", f"{min(append_s) / min(follow_s):.0%}  (each run: {follow_pairs})"),
                ]
                nosync_s, _ = bench_append(tmp / "nosync", changes, sync=False)
                rows.append(("  append, sync off (CPU only, not durable)", f"{n / nosync_s:,.0f} events/s"))
        replay = bench_replay(tmp, n)
        audit = bench_audit(tmp)
        apply = bench_apply(tmp, n)
        snap_take, snap_install = bench_snapshot(tmp, 10_000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows += [
        ("replay one node (read_node + decode)", f"{replay:,.0f} events/s  (target >= 200,000)"),
        ("replica apply (ReplicaStore.apply_records)", f"{apply:,.0f} events/s  (batches of {BATCH}, sync on)"),
        *((f"edge-eventlog {k} of that log ({n} events)", f"{v * 1000:.0f} ms") for k, v in audit.items()),
        ("snapshot of 10,000 pods (LogStore.snapshot)", f"{snap_take * 1000:.0f} ms"),
        ("install of that snapshot (ReplicaStore)", f"{snap_install * 1000:.0f} ms"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
