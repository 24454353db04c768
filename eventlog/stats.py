"""Figures about a store for `edge-eventlog stats` and health pages: extent, size, per-node counts.

Reads each store in one read transaction (a live writer is never blocked).
Imports no kubernetes or grpc.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from eventlog.digest import format_digest
from eventlog.encoding import decode_journal, from_u64
from eventlog.log import LogStore
from eventlog.replica import ReplicaStore
from eventlog.view import read_nodes


def store_stats(store: LogStore | ReplicaStore) -> dict[str, Any]:
    """Stats of either kind of store, as a JSON-ready dict."""
    return log_stats(store) if isinstance(store, LogStore) else replica_stats(store)


def log_stats(store: LogStore) -> dict[str, Any]:
    """Identity, extent, size and per-node events (retained) and pods of a manager log."""
    env = store._env  # same package: one read transaction for consistent figures
    events: dict[str, int] = defaultdict(int)
    with env.read() as txn:
        head = env.get_meta(txn, b"head")
        first = env.get_meta(txn, b"first", 1)
        fmt = env.get_meta(txn, b"format")
        log_bytes = env.get_meta(txn, b"log_bytes")
        nodes = read_nodes(txn, store._nodes)
        for k in txn.cursor(db=store._index).iternext(values=False):
            events[bytes(k[:-9]).decode(errors="replace")] += 1
    return {
        "path": str(store.path),
        "role": "manager",
        "log_id": store.log_id,
        "format": fmt,
        "head_offset": head,
        "first_offset": first,
        "event_count": head - first + 1,
        "log_bytes": log_bytes,
        "size_bytes": env.size_bytes(),
        "nodes": [
            {
                "node": st.node,
                "events": events.get(st.node, 0),
                "pods": st.pod_count,
                "head_offset": st.head_offset,
                "compacted_through": st.compacted_through,
                "digest": format_digest(st.digest),
            }
            for st in nodes
        ],
    }


def replica_stats(store: ReplicaStore) -> dict[str, Any]:
    """Identity, cursor, journal extent, size and pods of an agent replica."""
    env = store._env  # same package: one read transaction
    event_lines = snapshot_lines = 0
    first_seq = 0
    with env.read() as txn:
        fmt = env.get_meta(txn, b"format")
        applied = env.get_meta(txn, b"applied")
        log_id = env.get_meta_str(txn, b"log_id")
        journal_seq = env.get_meta(txn, b"journal_seq")
        nodes = {st.node: st for st in read_nodes(txn, store._nodes)}
        for k, v in txn.cursor(db=store._journal):
            first_seq = first_seq or from_u64(k)
            if decode_journal(from_u64(k), v).event is not None:
                event_lines += 1
            else:
                snapshot_lines += 1
    st = nodes.get(store.node)
    return {
        "path": str(store.path),
        "role": "agent",
        "log_id": log_id,
        "format": fmt,
        "node": store.node,
        "applied_offset": applied,
        "journal_first_seq": first_seq or journal_seq + 1,
        "journal_seq": journal_seq,
        "journal_lines": event_lines + snapshot_lines,
        "size_bytes": env.size_bytes(),
        "nodes": [
            {
                "node": store.node,
                "events": event_lines,
                "snapshots": snapshot_lines,
                "pods": st.pod_count if st else 0,
                "head_offset": st.head_offset if st else 0,
                "digest": format_digest(st.digest if st else 0),
            }
        ],
    }
