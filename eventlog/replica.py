"""The agent's store: its node's view (the replica), its journal, its cursor.

Databases: `view` and `nodes` (see view.py, one node only), `journal`
(local sequence -> applied event or installed snapshot, with the time applied).
The cursor (`log_id`, `applied_offset`) lives in the metadata and changes in
the same transaction as the view and the journal, so a replayed batch is
skipped event by event and a crash leaves all three in step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from itertools import islice

import lmdb

from eventlog.digest import digest_of, pod_hash_bytes
from eventlog.encoding import (
    EventFields,
    decode_event_fields,
    decode_journal,
    encode_event,
    encode_journal,
    from_u64,
    join_key,
    journal_event_prefix,
    u64,
)
from eventlog.environment import Environment, Reader
from eventlog.errors import DigestMismatchError, LogMismatchError, NotAStoreError
from eventlog.records import ApplyResult, Cursor, Event, JournalEntry, NodeState, PodEntry, PodKey, Snapshot, StoreInfo
from eventlog.view import ViewWriter, read_all_pods, read_node, read_nodes, read_pods

ROLE = "agent"
_DATABASES = ("view", "nodes", "journal")
DEFAULT_REPLICA_MAP_SIZE = 256 << 20


class ReplicaStore:
    """One node's replica of the manager's view, with the journal of how it got there."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        node: str | None = None,
        readonly: bool = False,
        map_size: int = DEFAULT_REPLICA_MAP_SIZE,
    ) -> None:
        if not readonly and not node:
            raise ValueError("a writable replica needs its node name")
        self._env = Environment(
            path, role=ROLE, databases=_DATABASES, readonly=readonly, map_size=map_size,
            initial_meta={b"node": (node or "").encode(), b"applied": u64(0), b"journal_seq": u64(0)},
        )
        self.path = self._env.path
        self._view = self._env.dbs["view"]
        self._nodes = self._env.dbs["nodes"]
        self._journal = self._env.dbs["journal"]
        with self._env.read() as txn:
            self.node = self._env.get_meta_str(txn, b"node")
        if node and node != self.node:
            self._env.close()
            raise NotAStoreError(
                f"{self.path}: this replica belongs to node {self.node!r}, not {node!r}; "
                "use another --data-dir or remove this one"
            )

    def cursor(self) -> Cursor:
        """Which log the replica follows and the newest offset it applied."""
        with self.reader() as r:
            return r.cursor()

    def state(self) -> NodeState:
        """Digest and pod count of the replica."""
        with self._env.read() as txn:
            return read_node(txn, self._nodes, self.node) or NodeState(self.node, 0, 0, 0)

    def pods(self) -> dict[PodKey, PodEntry]:
        """The pods this node should run."""
        with self._env.read() as txn:
            return read_pods(txn, self._view, self.node)

    def info(self) -> StoreInfo:
        """Identity and extent, for stats."""
        with self._env.read() as txn:
            seq = self._env.get_meta(txn, b"journal_seq")
            first = seq + 1
            first_key = txn.cursor(db=self._journal)
            if first_key.first():
                first = from_u64(first_key.key())
            return StoreInfo(
                str(self.path), ROLE, self._env.get_meta_str(txn, b"log_id"),
                self._env.get_meta(txn, b"format"), self._env.get_meta(txn, b"applied"), first,
                seq - first + 1, self._env.size_bytes(),
            )

    def reader(self) -> ReplicaReader:
        """`with replica.reader() as r`: reads in one read transaction, so they agree (tools, verify); never blocks the writer."""
        return ReplicaReader(self)

    def apply(self, events: Sequence[Event], *, log_id: str, applied_ns: int | None = None) -> ApplyResult:
        """Apply a batch in one transaction; events at or below applied_offset are skipped."""
        items = [((e.offset, e.node, e.op, e.namespace, e.name, e.manifest), encode_event(e)) for e in events]
        return self._apply(items, log_id=log_id, applied_ns=applied_ns)

    def apply_records(self, records: Sequence[bytes], *, log_id: str, applied_ns: int | None = None) -> ApplyResult:
        """apply() for framed events as they came off the wire: journalled as received,
        never re-encoded. Raises CorruptRecordError (before any write) on a bad record."""
        return self._apply([(decode_event_fields(r), r) for r in records], log_id=log_id, applied_ns=applied_ns)

    def _apply(self, items: list[tuple[EventFields, bytes]], *, log_id: str, applied_ns: int | None) -> ApplyResult:
        """The one transaction of apply(): view, journal and cursor together."""
        now = applied_ns if applied_ns is not None else time.time_ns()
        log_id_bytes = log_id.encode()

        def txn_fn(txn: lmdb.Transaction) -> ApplyResult:
            current = self._env.get_meta_str(txn, b"log_id")
            if current != log_id:
                raise LogMismatchError(
                    f"replica follows log {current or '(none)'}, got events of log {log_id}; a snapshot is needed"
                )
            applied = self._env.get_meta(txn, b"applied")
            seq = self._env.get_meta(txn, b"journal_seq")
            view = ViewWriter(txn, view_db=self._view, nodes_db=self._nodes)
            counter, node_name, _ = view.track(self.node)
            change, me = view.change, self.node
            journal_prefix = journal_event_prefix(now, log_id_bytes)
            journal_items: list[tuple[bytes, bytes]] = []
            skipped = 0
            # The agent's hot loop (a catch-up applies 100,000s of events): the view change and the
            # journal line per event, written with one C call per database at the end.
            for (offset, node, op, namespace, name, manifest), raw in items:
                if offset <= applied or node != me:
                    skipped += 1
                    continue
                ns, nm = namespace.encode(), name.encode()
                key = join_key((node_name, ns, nm))
                if manifest is not None:
                    change(counter, key, offset, pod_hash_bytes(ns, nm, manifest), manifest, skip_same=False)
                else:
                    change(counter, key, offset, None, skip_same=False)
                applied = offset
                seq += 1
                journal_items.append((u64(seq), journal_prefix + raw))
            if journal_items:
                txn.cursor(db=self._journal).putmulti(journal_items, append=True)
                view.flush()
                txn.put(b"applied", u64(applied), db=self._env.meta)
                txn.put(b"journal_seq", u64(seq), db=self._env.meta)
            return ApplyResult(len(journal_items), skipped, applied, counter.digest)

        return self._env.write(txn_fn)

    def install_snapshot(self, snapshot: Snapshot, *, applied_ns: int | None = None) -> ApplyResult:
        """Replace the replica with a snapshot in one transaction, after checking its digest."""
        if snapshot.node != self.node:
            raise ValueError(f"snapshot of node {snapshot.node} offered to replica of {self.node}")
        actual = digest_of(snapshot.pods)
        if actual != snapshot.digest:
            raise DigestMismatchError(
                f"snapshot of {snapshot.node} at {snapshot.offset}: pods hash to {actual:016x}, "
                f"not {snapshot.digest:016x}"
            )
        now = applied_ns if applied_ns is not None else time.time_ns()

        def txn_fn(txn: lmdb.Transaction) -> ApplyResult:
            view = ViewWriter(txn, view_db=self._view, nodes_db=self._nodes)
            view.replace_node(self.node, snapshot.pods, snapshot.offset)
            view.flush()
            seq = self._env.get_meta(txn, b"journal_seq") + 1
            entry = JournalEntry(
                seq, now, snapshot.log_id, snapshot_offset=snapshot.offset,
                snapshot_digest=snapshot.digest, snapshot_pods=len(snapshot.pods),
            )
            txn.put(u64(seq), encode_journal(entry), db=self._journal, append=True)
            txn.put(b"journal_seq", u64(seq), db=self._env.meta)
            txn.put(b"log_id", snapshot.log_id.encode(), db=self._env.meta)
            txn.put(b"applied", u64(snapshot.offset), db=self._env.meta)
            return ApplyResult(len(snapshot.pods), 0, snapshot.offset, snapshot.digest)

        return self._env.write(txn_fn)

    def journal(self, *, after_seq: int = 0, limit: int | None = None) -> list[JournalEntry]:
        """Journal lines after a sequence number, oldest first."""
        with self.reader() as r:
            return [decode_journal(seq, v) for seq, v in islice(r.journal_records(after_seq=after_seq), limit)]

    def compact_journal(self, *, keep_last: int) -> int:
        """Drop all but the newest journal lines; the replica is untouched."""

        def txn_fn(txn: lmdb.Transaction) -> int:
            seq = self._env.get_meta(txn, b"journal_seq")
            cur = txn.cursor(db=self._journal)
            n = 0
            if cur.first():
                while from_u64(cur.key()) <= seq - keep_last:
                    n += 1
                    if not cur.delete():
                        break
            return n

        return self._env.write(txn_fn)

    def close(self) -> None:
        """Close the store."""
        self._env.close()

    def __enter__(self) -> ReplicaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplicaReader(Reader):
    """Reads of a ReplicaStore that agree with each other: `with store.reader() as r`."""

    def __init__(self, store: ReplicaStore) -> None:
        super().__init__(store._env)
        self._store = store

    def cursor(self) -> Cursor:
        """Which log the replica follows and the newest offset it applied."""
        return Cursor(self._env.get_meta_str(self._txn, b"log_id"), self._env.get_meta(self._txn, b"applied"))

    def journal_seq(self) -> int:
        """Sequence number of the newest journal line (0: none yet)."""
        return self._env.get_meta(self._txn, b"journal_seq")

    def nodes(self) -> list[NodeState]:
        """Every node summary the store holds, by name (a sound replica holds only its own)."""
        return read_nodes(self._txn, self._store._nodes)

    def all_pods(self) -> dict[str, dict[PodKey, PodEntry]]:
        """Every pod the store's view holds, by node (a sound replica holds only its own node's)."""
        return read_all_pods(self._txn, self._store._view)

    def journal_records(self, *, after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
        """(seq, framed journal line) after a sequence number, oldest first; decode_journal reads a line."""
        cur = self._txn.cursor(db=self._store._journal)
        if after_seq and not cur.set_range(u64(after_seq + 1)):
            return
        for k, v in cur:
            yield from_u64(k), v
