"""The manager's store: the append-only event log and the view it implies.

Databases: `log` (offset -> event), `node_index` (node, offset -> node digest
after that event), `view` and `nodes` (the materialised view, see view.py), and
`base` (what compaction folded away: the view as of the first retained event,
so replaying the retained events over it gives the view, invariant 2).
Appends and view updates share one write transaction: both or neither.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import lmdb

from xxhash import xxh3_64_intdigest

from eventlog.digest import digest_of, pod_hash_bytes
from eventlog.encoding import (
    INDEX_NODE,
    INDEX_OFFSET,
    KEY_SEP_TEXT,
    OP_DELETE,
    OP_PUT,
    VIEW_OFFSET,
    decode_event,
    decode_event_fields,
    decode_view_value,
    encode_view_value,
    event_manifest,
    frame_event,
    from_u64,
    join_key,
    node_index_key,
    node_prefix,
    split_view_key,
    u64,
    view_key,
)
from eventlog.environment import DEFAULT_MAP_SIZE, Environment, Reader
from eventlog.errors import CompactedError, CorruptRecordError, DivergedError, OffsetOutOfRangeError
from eventlog.records import Appended, Change, CompactionResult, Event, NodeState, PodEntry, PodKey, Snapshot, SnapshotCause, SnapshotPlan, SnapshotReason, StoreInfo
from eventlog.view import ViewWriter, read_all_pods, read_node, read_nodes, read_pods

ROLE = "manager"
_DATABASES = ("log", "node_index", "view", "nodes", "base")
_U64_MAX = (1 << 64) - 1
_COMPACT_CHUNK = 10_000  # events dropped per write transaction, so compaction never holds the writer long
# what the write path takes per event: node, namespace and name (encoded), manifest (None: a delete), and the
# payload: the Change (append) or (offset, record bytes) (append_records)
_Item = tuple[str, bytes, bytes, "bytes | None", Any]


class LogStore:
    """The event log of one manager data directory, identified by its log_id."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, map_size: int = DEFAULT_MAP_SIZE,
                 max_map_size: int | None = None) -> None:
        self._env = Environment(
            path, role=ROLE, databases=_DATABASES, readonly=readonly, map_size=map_size, max_map_size=max_map_size,
            initial_meta={b"head": u64(0), b"first": u64(1), b"log_bytes": u64(0)},
        )
        self.path = self._env.path
        self._log = self._env.dbs["log"]
        self._index = self._env.dbs["node_index"]
        self._view = self._env.dbs["view"]
        self._nodes = self._env.dbs["nodes"]
        self._base = self._env.dbs["base"]
        with self._env.read() as txn:
            self.log_id = self._env.get_meta_str(txn, b"log_id")

    # -- identity and extent -------------------------------------------------

    @property
    def head_offset(self) -> int:
        """Offset of the newest event (0 for an empty log)."""
        with self._env.read() as txn:
            return self._env.get_meta(txn, b"head")

    @property
    def first_offset(self) -> int:
        """Offset of the oldest retained event (head + 1 when none is retained)."""
        with self._env.read() as txn:
            return self._env.get_meta(txn, b"first", 1)

    @property
    def log_bytes(self) -> int:
        """Bytes of the retained event records (what --retain-bytes bounds)."""
        with self._env.read() as txn:
            return self._env.get_meta(txn, b"log_bytes")

    def oldest_event_time_ns(self) -> int | None:
        """When the oldest retained event was appended; None for an empty log."""
        with self._env.read() as txn:
            cur = txn.cursor(db=self._log)
            return decode_event(cur.value()).time_ns if cur.first() else None

    def info(self) -> StoreInfo:
        """Identity and extent, read in one transaction."""
        with self._env.read() as txn:
            head = self._env.get_meta(txn, b"head")
            first = self._env.get_meta(txn, b"first", 1)
            fmt = self._env.get_meta(txn, b"format")
        return StoreInfo(str(self.path), ROLE, self.log_id, fmt, head, first, head - first + 1, self._env.size_bytes())

    # -- writing -----------------------------------------------------------

    def append(self, changes: Iterable[Change], *, time_ns: int | None = None) -> Appended:
        """Append the changes that change the view, in one transaction; return what was appended.

        A put of the manifest the view already holds, or a delete of a pod it
        does not hold, appends nothing: replays and resyncs are idempotent.
        """
        batch = list(changes)
        for c in batch:
            _check_change(c)
        now = time_ns if time_ns is not None else time.time_ns()
        if not batch:
            return Appended(self.head_offset + 1, now, ())
        # fields encoded once, before the write transaction, for the view key, the hash, the frame and the index
        items = [(c.node, c.namespace.encode(), c.name.encode(), c.manifest, c) for c in batch]

        def txn_fn(txn: lmdb.Transaction) -> Appended:
            first, kept = self._write_events(txn, items, now=now, replicated=False)
            return Appended(first, now, tuple(kept))

        return self._env.write(txn_fn)

    def append_records(self, records: Sequence[bytes]) -> Appended:
        """Append records framed by another store of this log_id (a leader's), stored byte for byte.

        They must continue the head exactly (else OffsetOutOfRangeError) and each must
        change the view as it did where it was framed (else DivergedError); a record
        that cannot be decoded raises CorruptRecordError. All or nothing, in one transaction.
        """
        items = [_record_item(i, r) for i, r in enumerate(records)]
        if not items:
            return Appended(self.head_offset + 1, 0, ())
        start = items[0][4][0]
        for i, item in enumerate(items):
            if item[4][0] != start + i:
                raise OffsetOutOfRangeError(
                    f"record {i} of the batch has offset {item[4][0]}, expected {start + i}: the batch has a gap or "
                    "a repeat"
                )

        def txn_fn(txn: lmdb.Transaction) -> Appended:
            head = self._env.get_meta(txn, b"head")
            if start != head + 1:
                raise OffsetOutOfRangeError(f"records start at offset {start}, but the head of this log is {head}")
            first, kept = self._write_events(txn, items, now=0, replicated=True)
            return Appended(first, 0, (), records=tuple(k[1] for k in kept))

        return self._env.write(txn_fn)

    def _write_events(self, txn: lmdb.Transaction, items: list[_Item], *, now: int,
                      replicated: bool) -> tuple[int, list[Any]]:
        """The one write path of append and append_records: log, node index, view, nodes and meta.

        Returns the first offset written and the payloads of the items that were
        appended. An item that changes nothing is skipped, or, when replicated,
        raises DivergedError (the transaction is then aborted whole).
        """
        head = self._env.get_meta(txn, b"head")
        first = head + 1
        log_bytes = self._env.get_meta(txn, b"log_bytes")
        view = ViewWriter(txn, view_db=self._view, nodes_db=self._nodes, keep_manifests=False)
        tracked, track, change = view.tracked, view.track, view.change
        kept: list[Any] = []
        log_items: list[tuple[bytes, bytes]] = []
        index_items: list[tuple[bytes, bytes]] = []
        # The hot loop of the manager (and of a standby following it): one pass per event,
        # writes gathered for one C call per database (see bench/eventlog_bench.py).
        for node, ns, name, manifest, payload in items:
            counter, node_b, prefix = tracked.get(node) or track(node)
            key = join_key((node_b, ns, name))
            offset = head + 1
            if manifest is not None:
                if not change(counter, key, offset, pod_hash_bytes(ns, name, manifest), skip_same=True):
                    if replicated:
                        raise _diverged(offset, "puts", node, ns, name, "the manifest it already holds")
                    continue
                op = OP_PUT
            else:
                if not change(counter, key, offset, None, skip_same=True):
                    if replicated:
                        raise _diverged(offset, "deletes", node, ns, name, "a pod it does not hold")
                    continue
                op = OP_DELETE
            head = offset
            raw = payload[1] if replicated else frame_event(offset, now, op, node_b, ns, name, payload.source, manifest)
            offset_key = u64(offset)
            log_items.append((offset_key, raw))
            index_items.append((prefix + offset_key, u64(counter.digest)))  # == node_index_key(node, offset)
            log_bytes += len(raw)
            kept.append(payload)
        if kept:
            # one C call per database instead of one per event; offsets only grow: MDB_APPEND
            txn.cursor(db=self._log).putmulti(log_items, append=True)
            txn.cursor(db=self._index).putmulti(index_items)
            view.flush()
            txn.put(b"head", u64(head), db=self._env.meta)
            txn.put(b"log_bytes", u64(log_bytes), db=self._env.meta)
        return first, kept

    def compact(
        self, *, keep_last: int | None = None, older_than_ns: int | None = None, max_bytes: int | None = None
    ) -> CompactionResult:
        """Drop the oldest events beyond any of the bounds; the view stays whole."""
        return self.compact_before(self.compaction_cut(keep_last=keep_last, older_than_ns=older_than_ns,
                                                       max_bytes=max_bytes))

    def compaction_cut(
        self, *, keep_last: int | None = None, older_than_ns: int | None = None, max_bytes: int | None = None
    ) -> int:
        """The first offset compaction would keep: events before it are beyond a bound (first_offset: none)."""
        with self._env.read() as txn:
            head = self._env.get_meta(txn, b"head")
            first = self._env.get_meta(txn, b"first", 1)
            log_bytes = self._env.get_meta(txn, b"log_bytes")
            cut = first  # events with offset < cut are dropped
            if keep_last is not None:
                cut = max(cut, head - keep_last + 1)
            if older_than_ns is not None or max_bytes is not None:
                remaining = log_bytes
                for k, v in txn.cursor(db=self._log).iternext():
                    off = from_u64(k)
                    too_old = older_than_ns is not None and decode_event(v).time_ns < older_than_ns
                    too_big = max_bytes is not None and remaining > max_bytes
                    if off >= cut and not (too_old or too_big):
                        break
                    remaining -= len(v)
                    cut = max(cut, off + 1)
        return cut

    def compact_before(self, cut: int) -> CompactionResult:
        """Drop the events with offsets below `cut` (as planned by compaction_cut), in chunks."""
        first = self.first_offset
        cut = min(cut, self.head_offset + 1)
        dropped = 0
        while first < cut:
            end = min(cut, first + _COMPACT_CHUNK)
            dropped += self._env.write(lambda txn, a=first, b=end: self._drop(txn, a, b))
            first = end
        return CompactionResult(dropped, max(first, self.first_offset))

    def _drop(self, txn: lmdb.Transaction, start: int, end: int) -> int:
        """Fold events [start, end) into the base and delete them."""
        summaries = ViewWriter(txn, view_db=self._view, nodes_db=self._nodes)  # only compacted_through changes
        log_bytes = self._env.get_meta(txn, b"log_bytes")
        n = 0
        for off in range(start, end):
            raw = txn.get(u64(off), db=self._log)
            if raw is None:
                continue
            e = decode_event(raw)
            key = view_key(e.node, e.namespace, e.name)
            if e.op == "put":
                assert e.manifest is not None
                txn.put(key, encode_view_value(e.offset, 0, e.manifest), db=self._base)
            else:
                txn.delete(key, db=self._base)
            summaries.node(e.node).compacted_through = off
            txn.delete(u64(off), db=self._log)
            txn.delete(node_index_key(e.node, off), db=self._index)
            log_bytes -= len(raw)
            n += 1
        summaries.flush()
        txn.put(b"first", u64(end), db=self._env.meta)
        txn.put(b"log_bytes", u64(log_bytes), db=self._env.meta)
        return n

    def copy_to(self, dest_dir: str | os.PathLike[str]) -> StoreInfo:
        """Copy the store as one read transaction sees it into an empty directory: same log_id, meta and records.

        Compacted (free pages left out); never blocks the writer. What a leader sends a standby that cannot resume.
        """
        dest = Path(dest_dir)
        with self._env.read() as txn:
            head = self._env.get_meta(txn, b"head")
            first = self._env.get_meta(txn, b"first", 1)
            fmt = self._env.get_meta(txn, b"format")
            self._env.copy_into(dest, txn)
        size = (dest / "data.mdb").stat().st_size
        return StoreInfo(str(dest), ROLE, self.log_id, fmt, head, first, head - first + 1, size)

    # -- reading -----------------------------------------------------------

    def reader(self) -> LogReader:
        """`with store.reader() as r`: reads in one read transaction, so they agree (tools, verify, export); never blocks the writer."""
        return LogReader(self)

    def node_state(self, node: str) -> NodeState | None:
        """A node's head offset, digest and pod count; None if the log never saw it."""
        with self._env.read() as txn:
            return read_node(txn, self._nodes, node)

    def nodes(self) -> list[NodeState]:
        """Every node the log has seen, by name."""
        with self._env.read() as txn:
            return read_nodes(txn, self._nodes)

    def pods(self, node: str) -> dict[PodKey, PodEntry]:
        """A node's current pods."""
        with self.reader() as r:
            return r.pods(node)

    def all_pods(self) -> dict[str, dict[PodKey, PodEntry]]:
        """Every node's pods, read in one transaction (the recorder's diff base)."""
        with self.reader() as r:
            return r.all_pods()

    def base(self, node: str) -> dict[PodKey, PodEntry]:
        """The node's pods as of the first retained event: what compaction folded away."""
        with self.reader() as r:
            return r.base(node)

    def digest_at(self, node: str, offset: int) -> int | None:
        """The node's digest right after its event at `offset`; None if unknown here."""
        with self.reader() as r:
            st = r.node_state(node)
            if st is None:
                return 0 if offset == 0 else None
            if offset == st.head_offset:
                return st.digest
            return r.index_digest(node, offset)

    def read_node_raw(self, node: str, *, after: int = 0, limit: int = 256, through: int | None = None) -> list[bytes]:
        """Up to `limit` framed events of one node with after < offset <= through (None: the head), in order.

        Raises CompactedError when some of them were dropped: the caller needs a snapshot.
        """
        with self.reader() as r:
            st = r.node_state(node)
            if st is not None and after < st.compacted_through:
                raise CompactedError(
                    f"events of node {node} after offset {after} were compacted (through {st.compacted_through})"
                )
            return list(islice(r.node_records(node, after=after, through=through), limit))

    def node_head_through(self, node: str, offset: int) -> int:
        """The node's newest event offset <= offset (0 if none): its head as a reader stopping there sees it.

        Raises CompactedError when compaction dropped the node's events past `offset`: which was newest is lost.
        """
        with self.reader() as r:
            return r.node_head_through(node, offset)

    def digest_through(self, node: str, offset: int) -> int | None:
        """The node's digest as of `offset` (after its newest event <= offset); None when compacted away."""
        with self.reader() as r:
            return r.digest_through(node, offset)

    def record_hash(self, offset: int) -> int | None:
        """XXH3-64 of the stored record at `offset` (0 for offset 0 while nothing is compacted); None if not retained.

        Two stores of one log_id with equal hashes at their heads hold the same history (a standby's resume check).
        """
        with self.reader() as r:
            return r.record_hash(offset)

    def read_node(self, node: str, *, after: int = 0, limit: int = 256) -> list[Event]:
        """Decoded form of read_node_raw."""
        return [decode_event(r) for r in self.read_node_raw(node, after=after, limit=limit)]

    def read(self, *, after: int = 0, limit: int = 1024) -> list[Event]:
        """Up to `limit` events of all nodes with offset > after."""
        with self._env.read() as txn:
            first = self._env.get_meta(txn, b"first", 1)
            head = self._env.get_meta(txn, b"head")
            if after + 1 < first and after < head:
                raise CompactedError(f"offsets {after + 1}..{first - 1} were compacted; the log starts at {first}")
            cur = txn.cursor(db=self._log)
            out: list[Event] = []
            if cur.set_range(u64(after + 1)):
                for v in cur.iternext(keys=False):
                    out.append(decode_event(v))
                    if len(out) >= limit:
                        break
            return out

    def iter_events(self, *, after: int = 0, chunk: int = 4096) -> Iterator[Event]:
        """Every event after an offset, read in chunks so no transaction stays open long."""
        while True:
            events = self.read(after=after, limit=chunk)
            if not events:
                return
            yield from events
            after = events[-1].offset

    def snapshot(self, node: str) -> Snapshot:
        """The node's whole view as of its head offset, read in one transaction."""
        with self.reader() as r:
            st = r.node_state(node)
            pods = r.pods(node)
        offset, digest = (st.head_offset, st.digest) if st else (0, 0)
        return Snapshot(self.log_id, node, offset, digest, tuple(sorted(pods.values(), key=lambda p: p.key)))

    def snapshot_plan(self, node: str) -> SnapshotPlan:
        """The node's head, digest and pod keys with their offsets, in one short transaction (no manifests)."""
        keys: list[bytes] = []
        offsets: list[int] = []
        with self._env.read() as txn:
            st = read_node(txn, self._nodes, node)
            prefix = node_prefix(node)
            cur = txn.cursor(db=self._view)
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    keys.append(k)
                    offsets.append(from_u64(v[VIEW_OFFSET]))
        offset, digest = (st.head_offset, st.digest) if st else (0, 0)
        return SnapshotPlan(self.log_id, node, offset, digest, tuple(keys), tuple(offsets))

    def snapshot_entries(self, plan: SnapshotPlan, *, start: int, limit: int, max_bytes: int) -> list[PodEntry]:
        """Pods start.. of a plan (at most `limit`, stopping past max_bytes of manifests), in one short transaction.

        Each manifest is the one at the offset the plan recorded, so the pods form the view
        as of the plan's offset even when the node changed since. Raises CompactedError when
        compaction dropped a recorded version meanwhile: the snapshot must start again.
        """
        out: list[PodEntry] = []
        size = 0
        with self._env.read() as txn:
            first = self._env.get_meta(txn, b"first", 1)
            for i in range(start, min(len(plan.keys), start + limit)):
                key, offset = plan.keys[i], plan.offsets[i]
                _, ns, name = split_view_key(key)
                manifest: bytes | None = None
                if offset >= first:
                    raw = txn.get(u64(offset), db=self._log)
                    if raw is not None:
                        manifest = event_manifest(raw) or b""
                else:
                    b = txn.get(key, db=self._base)
                    if b is not None:
                        b_offset, _, b_manifest = decode_view_value(b)
                        manifest = b_manifest if b_offset == offset else None
                if manifest is None:
                    raise CompactedError(
                        f"pod {ns}/{name} of node {plan.node} at offset {offset} was compacted while its snapshot "
                        "was sent"
                    )
                out.append(PodEntry(ns, name, offset, manifest))
                size += len(manifest)
                if size >= max_bytes:
                    break
        return out

    def check_offset(self, offset: int) -> None:
        """Raise unless `offset` is a retained event (for tools asking "state as of")."""
        info = self.info()
        if offset > info.head_offset or offset < 0:
            raise OffsetOutOfRangeError(f"offset {offset} is beyond the head of the log ({info.head_offset})")
        if offset < info.first_offset - 1:
            raise CompactedError(
                f"offset {offset} was compacted; the log starts at {info.first_offset} (state is known from "
                f"{info.first_offset - 1} on)"
            )

    def resume_reason(self, node: str, *, log_id: str, applied_offset: int, digest: int) -> SnapshotCause | None:
        """Why an agent at this position needs a snapshot; None when it can resume."""
        if log_id != self.log_id:
            if log_id:
                return SnapshotCause(SnapshotReason.UNKNOWN_LOG_ID, "unknown log_id")
            return SnapshotCause(SnapshotReason.EMPTY_REPLICA, "empty replica")
        with self.reader() as r:
            st = r.node_state(node)
            head = st.head_offset if st else 0
            if applied_offset > head:
                return SnapshotCause(SnapshotReason.BEYOND_HEAD,
                                     f"applied offset {applied_offset} is beyond the node's head {head}")
            if st is not None and applied_offset < st.compacted_through:
                return SnapshotCause(SnapshotReason.COMPACTED, f"offset {applied_offset} was compacted")
            # as of applied_offset, not only at an event of the node: an agent whose applied offset is another
            # node's event here applied a different history (a deposed leader's tail)
            expected = r.digest_through(node, applied_offset)
        if expected is not None and expected != digest:
            return SnapshotCause(SnapshotReason.DIGEST_MISMATCH, "digest mismatch")
        return None

    def close(self) -> None:
        """Close the store."""
        self._env.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogReader(Reader):
    """Reads of a LogStore that agree with each other: `with store.reader() as r`."""

    def __init__(self, store: LogStore) -> None:
        super().__init__(store._env)
        self._store = store

    def head_offset(self) -> int:
        """Offset of the newest event (0 for an empty log)."""
        return self._env.get_meta(self._txn, b"head")

    def first_offset(self) -> int:
        """Offset of the oldest retained event (head + 1 when none is retained)."""
        return self._env.get_meta(self._txn, b"first", 1)

    def log_bytes(self) -> int:
        """Bytes of the retained event records, as the store counts them."""
        return self._env.get_meta(self._txn, b"log_bytes")

    def node_state(self, node: str) -> NodeState | None:
        """A node's head offset, digest and pod count; None if the log never saw it."""
        return read_node(self._txn, self._store._nodes, node)

    def nodes(self) -> list[NodeState]:
        """Every node the log has seen, by name."""
        return read_nodes(self._txn, self._store._nodes)

    def pods(self, node: str) -> dict[PodKey, PodEntry]:
        """A node's current pods."""
        return self._view(node).get(node, {})

    def all_pods(self) -> dict[str, dict[PodKey, PodEntry]]:
        """Every node's current pods."""
        return self._view(None)

    def _view(self, node: str | None) -> dict[str, dict[PodKey, PodEntry]]:
        """The view (of one node, or all) with each manifest read from where it lives.

        The view holds (offset, hash); the manifest is in the log record at that
        offset, or in the base once compaction dropped that record. A manifest that
        cannot be found reads as b"" (never valid JSON), which verify reports.
        """
        txn, log_db, base_db = self._txn, self._store._log, self._store._base
        first = self.first_offset()
        out: dict[str, dict[PodKey, PodEntry]] = {}
        cur = txn.cursor(db=self._store._view)
        prefix = node_prefix(node) if node is not None else b""
        if not cur.set_range(prefix):
            return out
        for k, v in cur:
            if not k.startswith(prefix):
                break
            n, ns, name = split_view_key(k)
            offset_key = v[VIEW_OFFSET]
            offset = from_u64(offset_key)
            manifest = b""
            if offset >= first:
                raw = txn.get(offset_key, db=log_db)
                try:
                    manifest = (event_manifest(raw) or b"") if raw is not None else b""
                except CorruptRecordError:
                    manifest = b""
            else:
                b = txn.get(k, db=base_db)
                if b is not None:
                    b_offset, _, b_manifest = decode_view_value(b)
                    manifest = b_manifest if b_offset == offset else b""
            out.setdefault(n, {})[(ns, name)] = PodEntry(ns, name, offset, manifest)
        return out

    def base(self, node: str) -> dict[PodKey, PodEntry]:
        """The node's pods as of the first retained event: what compaction folded away."""
        return read_pods(self._txn, self._store._base, node)

    def all_bases(self) -> dict[str, dict[PodKey, PodEntry]]:
        """Every node's base, by node."""
        return read_all_pods(self._txn, self._store._base)

    def records(self, *, after: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """The log's (key, framed event) pairs after an offset, in order; keys are u64(offset) (verify checks)."""
        cur = self._txn.cursor(db=self._store._log)
        if after and not cur.set_range(u64(after + 1)):
            return iter(())
        return cur.iternext()  # the cursor's own iterator: no Python frame per record

    def node_records(self, node: str, *, after: int = 0, through: int | None = None) -> Iterator[bytes]:
        """A node's retained framed events with after < offset <= through, in order, through the node index.

        Raises CompactedError for an event the index holds and the log does not.
        """
        txn, log_db = self._txn, self._store._log
        prefix = node_prefix(node)
        cur = txn.cursor(db=self._store._index)
        if not cur.set_range(prefix + u64(after + 1)):
            return
        for k in cur.iternext(values=False):
            if not k.startswith(prefix):
                return
            offset_key = k[INDEX_OFFSET]
            if through is not None and from_u64(offset_key) > through:
                return
            raw = txn.get(offset_key, db=log_db)
            if raw is None:  # compaction drops an event and its index entry in one transaction
                raise CompactedError(f"event {from_u64(offset_key)} of node {node} is indexed but missing from the log")
            yield raw

    def index_digest(self, node: str, offset: int) -> int | None:
        """The node's digest right after its event at `offset`, from the node index; None if not indexed."""
        raw = self._txn.get(node_index_key(node, offset), db=self._store._index)
        return from_u64(raw) if raw is not None else None

    def record(self, offset: int) -> bytes | None:
        """The stored bytes of the record at `offset`; None when not retained."""
        return self._txn.get(u64(offset), db=self._store._log) if offset > 0 else None

    def record_hash(self, offset: int) -> int | None:
        """XXH3-64 of the stored record at `offset` (0 for offset 0 while nothing is compacted); None if not kept."""
        if offset == 0:
            return 0 if self.first_offset() == 1 else None
        raw = self.record(offset)
        return xxh3_64_intdigest(raw) if raw is not None else None

    def node_head_through(self, node: str, offset: int) -> int:
        """The node's newest event offset <= offset (0 if none).

        Raises CompactedError when compaction dropped the node's events past `offset`: which was newest is lost.
        """
        prefix = node_prefix(node)
        cur = self._txn.cursor(db=self._store._index)
        # the first key past the node's events <= offset, then one back
        found = cur.set_range(prefix + u64(offset + 1)) if offset < _U64_MAX else False
        if (cur.prev() if found else cur.last()) and cur.key().startswith(prefix):
            return from_u64(cur.key()[INDEX_OFFSET])
        st = self.node_state(node)
        compacted = st.compacted_through if st is not None else 0
        if compacted > offset:
            raise CompactedError(f"the events of node {node} through offset {offset} were compacted")
        return compacted

    def digest_through(self, node: str, offset: int) -> int | None:
        """The node's digest as of `offset` (after its newest event <= offset); None when compacted away.

        With no retained event of the node <= offset it is the digest of the node's base
        (what compaction folded away; empty for a node compaction never touched).
        """
        st = self.node_state(node)
        if st is None:
            return 0
        if offset >= st.head_offset:
            return st.digest
        try:
            at = self.node_head_through(node, offset)
        except CompactedError:
            return None
        if at > st.compacted_through:
            return self.index_digest(node, at)
        return digest_of(self.base(node).values())

    def index_counts(self) -> dict[str, int]:
        """Entries of the node index per node: one per retained event of the node."""
        counts: dict[str, int] = defaultdict(int)
        for k in self._txn.cursor(db=self._store._index).iternext(values=False):
            counts[k[INDEX_NODE].decode(errors="replace")] += 1  # a name that is not UTF-8 shown with replacements
        return counts


def _check_change(c: Change) -> None:
    if c.op not in ("put", "delete"):
        raise ValueError(f"unknown op {c.op!r}")
    if (c.op == "put") != (c.manifest is not None):
        raise ValueError(f"{c.op} of {c.namespace}/{c.name} must {'' if c.op == 'put' else 'not '}carry a manifest")
    for field in (c.node, c.namespace, c.name):
        if not field or KEY_SEP_TEXT in field:
            raise ValueError(f"empty or NUL-containing name in change {c!r}")


def _record_item(i: int, raw: bytes) -> _Item:
    """A received record as a write-path item; CorruptRecordError names the record when it is not one."""
    try:
        offset, node, _, ns, name, manifest = decode_event_fields(raw)
    except CorruptRecordError as exc:
        raise CorruptRecordError(f"record {i} of the batch: {exc}") from None
    for field in (node, ns, name):
        if not field or KEY_SEP_TEXT in field:
            raise CorruptRecordError(f"record {i} of the batch (offset {offset}) has an empty or NUL-containing name")
    return (node, ns.encode(), name.encode(), manifest, (offset, bytes(raw)))


def _diverged(offset: int, verb: str, node: str, ns: bytes, name: bytes, what: str) -> DivergedError:
    return DivergedError(
        f"record {offset} {verb} pod {ns.decode()}/{name.decode()} of node {node}, but this log's view has {what}: "
        "its history diverged from the sender's"
    )
