"""Figures about a store for `edge-eventlog stats` and health pages: extent, size, per-node counts.

Reads each store in one read transaction (a live writer is never blocked).
Imports no kubernetes or grpc.
"""

from __future__ import annotations

from typing import Any

from eventlog.digest import format_digest
from eventlog.encoding import decode_journal
from eventlog.log import LogStore
from eventlog.replica import ReplicaStore


def store_stats(store: LogStore | ReplicaStore) -> dict[str, Any]:
    """Stats of either kind of store, as a JSON-ready dict."""
    return log_stats(store) if isinstance(store, LogStore) else replica_stats(store)


def log_stats(store: LogStore) -> dict[str, Any]:
    """Identity, extent, size and per-node events (retained) and pods of a manager log."""
    with store.reader() as r:  # one read transaction: consistent figures
        head = r.head_offset()
        first = r.first_offset()
        fmt = r.format_version()
        log_bytes = r.log_bytes()
        nodes = r.nodes()
        events = r.index_counts()
        size_bytes = r.size_bytes()
    return {
        "path": str(store.path),
        "role": "manager",
        "log_id": store.log_id,
        "format": fmt,
        "head_offset": head,
        "first_offset": first,
        "event_count": head - first + 1,
        "log_bytes": log_bytes,
        "size_bytes": size_bytes,
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
    event_lines = snapshot_lines = 0
    first_seq = 0
    with store.reader() as r:  # one read transaction
        fmt = r.format_version()
        cursor = r.cursor()
        journal_seq = r.journal_seq()
        nodes = {st.node: st for st in r.nodes()}
        for seq, v in r.journal_records():
            first_seq = first_seq or seq
            if decode_journal(seq, v).event is not None:
                event_lines += 1
            else:
                snapshot_lines += 1
        size_bytes = r.size_bytes()
    st = nodes.get(store.node)
    return {
        "path": str(store.path),
        "role": "agent",
        "log_id": cursor.log_id,
        "format": fmt,
        "node": store.node,
        "applied_offset": cursor.applied_offset,
        "journal_first_seq": first_seq or journal_seq + 1,
        "journal_seq": journal_seq,
        "journal_lines": event_lines + snapshot_lines,
        "size_bytes": size_bytes,
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
