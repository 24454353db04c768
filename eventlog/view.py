"""The materialised view: per node, each pod's manifest and the offset that set it.

Both the manager's log and the agent's replica keep one; ViewWriter is the only
code that changes it, always inside the caller's write transaction, so the
view, the node's digest and whatever the caller records commit together.
"""

from __future__ import annotations

from dataclasses import dataclass

import lmdb

from eventlog.digest import pod_hash_bytes
from eventlog.encoding import (
    KEY_SEP,
    decode_node,
    decode_view_value,
    encode_node,
    encode_view_value,
    join_key,
    split_view_key,
    view_key,
    view_value_hash,
)
from eventlog.records import NodeState, PodEntry, PodKey

_DELETED = (0, 0, b"")  # a pending delete (offsets start at 1)


@dataclass(slots=True)
class NodeCounter:
    """A node's summary while a write transaction changes it (flushed once per batch)."""

    head_offset: int = 0
    digest: int = 0
    pod_count: int = 0
    compacted_through: int = 0


Tracked = tuple[NodeCounter, bytes, bytes]  # a node's counter, its name as bytes, and its view key prefix


class ViewWriter:
    """Applies pod changes to a view within one write transaction.

    Changed pods are held in memory and written by flush() in key order with one
    C call (a batch of puts costs a fraction of one txn.put per event); reads in the
    same transaction see them only after flush(), so call it before commit.
    """

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
        self.tracked: dict[str, Tracked] = {}  # hot loops read this dict directly before calling track()
        self._pending: dict[bytes, tuple[int, int, bytes]] = {}  # view key -> (offset, hash, manifest); _DELETED

    def node(self, node: str) -> NodeCounter:
        """The node's summary, read once per transaction."""
        c = self.nodes.get(node)
        if c is None:
            raw = self.txn.get(node.encode(), db=self.nodes_db)
            c = NodeCounter(*decode_node(raw)) if raw is not None else NodeCounter()
            self.nodes[node] = c
        return c

    def track(self, node: str) -> Tracked:
        """The node's counter with its encoded name and key prefix, computed once per transaction."""
        t = self.tracked.get(node)
        if t is None:
            name = node.encode()
            t = self.tracked[node] = (self.node(node), name, name + KEY_SEP)
        return t

    def change(self, counter: NodeCounter, key: bytes, offset: int, new_hash: int | None, manifest: bytes = b"",
               *, skip_same: bool) -> bool:
        """Put the pod at `key` (new_hash set) or delete it (new_hash None) as of `offset`.

        False when it changes nothing and skip_same is set: a put of the same
        manifest (equal 64-bit hash) or a delete of a pod the view does not hold.
        The value is encoded by flush(), once per pod however often a batch changes it.
        """
        pending = self._pending.get(key)
        if pending is not None:
            old_hash = pending[1]  # 0 with offset 0: deleted earlier in this batch
            present = pending[0] != 0
        else:
            old = self.txn.get(key, db=self.view_db)
            present = old is not None
            old_hash = view_value_hash(old)[0] if present else 0
        if new_hash is not None:
            if skip_same and present and old_hash == new_hash:
                return False
            self._pending[key] = (offset, new_hash, manifest if self.keep_manifests else b"")
            counter.digest ^= old_hash ^ new_hash
            counter.pod_count += not present
        elif present:
            self._pending[key] = _DELETED
            counter.digest ^= old_hash
            counter.pod_count -= 1
        elif skip_same:
            return False
        if offset > counter.head_offset:
            counter.head_offset = offset
        return True

    def replace_node(self, node: str, pods: tuple[PodEntry, ...], offset: int) -> None:
        """Make the node's view exactly these pods (a snapshot install)."""
        self._write_pending()
        prefix = view_key(node)
        cur = self.txn.cursor(db=self.view_db)
        if cur.set_range(prefix):
            while cur.key().startswith(prefix):
                if not cur.delete():
                    break
        c = self.node(node)
        c.digest, c.pod_count = 0, 0
        items = []
        name = node.encode()
        for p in pods:
            ns, nm = p.namespace.encode(), p.name.encode()
            h = pod_hash_bytes(ns, nm, p.manifest)
            items.append((join_key((name, ns, nm)), encode_view_value(p.offset, h, p.manifest)))
            c.digest ^= h
            c.pod_count += 1
        items.sort()
        self.txn.cursor(db=self.view_db).putmulti(items)
        c.head_offset = offset

    def _write_pending(self) -> None:
        pending = self._pending
        if not pending:
            return
        puts = sorted(
            (key, encode_view_value(offset, h, manifest)) for key, (offset, h, manifest) in pending.items() if offset
        )
        if puts:
            self.txn.cursor(db=self.view_db).putmulti(puts)
        if len(puts) < len(pending):
            for key, (offset, _, _) in pending.items():
                if not offset:
                    self.txn.delete(key, db=self.view_db)
        pending.clear()

    def flush(self) -> None:
        """Write the changed pods and every touched node's summary; call once before commit."""
        self._write_pending()
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


def read_all_pods(txn: lmdb.Transaction, view_db: lmdb._Database) -> dict[str, dict[PodKey, PodEntry]]:
    """Every node's pods in a view-shaped database (a view, or the log's base), read in the caller's transaction."""
    out: dict[str, dict[PodKey, PodEntry]] = {}
    for k, v in txn.cursor(db=view_db):
        node, ns, name = split_view_key(k)
        offset, _, manifest = decode_view_value(v)
        out.setdefault(node, {})[(ns, name)] = PodEntry(ns, name, offset, manifest)
    return out


def read_node(txn: lmdb.Transaction, nodes_db: lmdb._Database, node: str) -> NodeState | None:
    """A node's summary, or None for a node the store never saw."""
    raw = txn.get(node.encode(), db=nodes_db)
    return NodeState(node, *decode_node(raw)) if raw is not None else None


def read_nodes(txn: lmdb.Transaction, nodes_db: lmdb._Database) -> list[NodeState]:
    """Every node's summary, ordered by name."""
    return [NodeState(bytes(k).decode(), *decode_node(v)) for k, v in txn.cursor(db=nodes_db)]
