"""The materialised view: per node, each pod's manifest and the offset that set it.

Both the manager's log and the agent's replica keep one; these functions are
the only code that changes it, always inside the caller's write transaction,
so the view, the node's digest and whatever the caller records commit together.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lmdb

from eventlog.digest import pod_hash
from eventlog.encoding import decode_node, decode_view_value, encode_node, encode_view_value, split_view_key, view_key
from eventlog.records import NodeState, Op, PodEntry, PodKey

_HASH = struct.Struct(">Q")  # the pod hash stored after the offset in a view value


@dataclass(slots=True)
class NodeCounter:
    """A node's summary while a write transaction changes it (flushed once per batch)."""

    head_offset: int = 0
    digest: int = 0
    pod_count: int = 0
    compacted_through: int = 0

    def frozen(self, node: str) -> NodeState:
        """The record form."""
        return NodeState(node, self.head_offset, self.digest, self.pod_count, self.compacted_through)


class ViewWriter:
    """Applies pod changes to a view within one write transaction."""

    def __init__(
        self, txn: lmdb.Transaction, *, view_db: lmdb._Database, nodes_db: lmdb._Database, keep_manifests: bool = True
    ) -> None:
        self.txn = txn
        self.view_db = view_db
        self.nodes_db = nodes_db
        # The manager's view keeps (offset, hash) only: the manifest is in the log record at
        # that offset (or the compaction base), so each append writes it once, not twice.
        self.keep_manifests = keep_manifests
        self.nodes: dict[str, NodeCounter] = {}

    def node(self, node: str) -> NodeCounter:
        """The node's summary, read once per transaction."""
        c = self.nodes.get(node)
        if c is None:
            raw = self.txn.get(node.encode(), db=self.nodes_db)
            c = NodeCounter(*decode_node(raw)) if raw is not None else NodeCounter()
            self.nodes[node] = c
        return c

    def apply(
        self, node: str, op: Op, namespace: str, name: str, manifest: bytes | None, offset: int, *, skip_same: bool
    ) -> bool:
        """Apply one change; False when it changes nothing (and skip_same is set)."""
        c = self.node(node)
        key = view_key(node, namespace, name)
        old = self.txn.get(key, db=self.view_db)
        old_hash = _HASH.unpack_from(old, 8)[0] if old is not None else 0  # no copy of the manifest
        if op == "put":
            assert manifest is not None
            h = pod_hash(namespace, name, manifest)
            if skip_same and old is not None and old_hash == h:  # same pod, same manifest (64-bit hash)
                return False
            self.txn.put(key, encode_view_value(offset, h, manifest if self.keep_manifests else b""), db=self.view_db)
            c.digest ^= old_hash ^ h
            c.pod_count += old is None
        else:
            if old is None:
                if skip_same:
                    return False
            else:
                self.txn.delete(key, db=self.view_db)
                c.digest ^= old_hash
                c.pod_count -= 1
        c.head_offset = max(c.head_offset, offset)
        return True

    def replace_node(self, node: str, pods: tuple[PodEntry, ...], offset: int) -> None:
        """Make the node's view exactly these pods (a snapshot install)."""
        prefix = view_key(node)
        cur = self.txn.cursor(db=self.view_db)
        if cur.set_range(prefix):
            while cur.key().startswith(prefix):
                if not cur.delete():
                    break
        c = self.node(node)
        c.digest, c.pod_count = 0, 0
        for p in pods:
            h = pod_hash(p.namespace, p.name, p.manifest)
            self.txn.put(view_key(node, p.namespace, p.name), encode_view_value(p.offset, h, p.manifest), db=self.view_db)
            c.digest ^= h
            c.pod_count += 1
        c.head_offset = offset

    def flush(self) -> None:
        """Write every touched node's summary; call once before commit."""
        for node, c in self.nodes.items():
            self.txn.put(
                node.encode(),
                encode_node(c.head_offset, c.digest, c.pod_count, c.compacted_through),
                db=self.nodes_db,
            )


def read_pods(txn: lmdb.Transaction, view_db: lmdb._Database, node: str) -> dict[PodKey, PodEntry]:
    """A node's pods as one dict, read in the caller's transaction."""
    prefix = view_key(node)
    out: dict[PodKey, PodEntry] = {}
    cur = txn.cursor(db=view_db)
    if not cur.set_range(prefix):
        return out
    for k, v in cur:
        if not k.startswith(prefix):
            break
        _, ns, name = split_view_key(k)
        offset, _, manifest = decode_view_value(v)
        out[(ns, name)] = PodEntry(ns, name, offset, manifest)
    return out


def read_node(txn: lmdb.Transaction, nodes_db: lmdb._Database, node: str) -> NodeState | None:
    """A node's summary, or None for a node the store never saw."""
    raw = txn.get(node.encode(), db=nodes_db)
    return NodeState(node, *decode_node(raw)) if raw is not None else None


def read_nodes(txn: lmdb.Transaction, nodes_db: lmdb._Database) -> list[NodeState]:
    """Every node's summary, ordered by name."""
    return [NodeState(bytes(k).decode(), *decode_node(v)) for k, v in txn.cursor(db=nodes_db)]
