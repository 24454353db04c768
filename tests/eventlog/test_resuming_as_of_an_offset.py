"""A node's state as of any offset, not only at its own events: resume decisions, heads and reads through an offset."""

from __future__ import annotations

import pytest

from eventlog import (
    CompactedError, Event, LogStore, PodEntry, ReplicaStore, Snapshot, SnapshotCause, SnapshotReason, decode_event, digest_of,
)
from eventlog.digest import format_digest
from eventlog.replay import log_state_at
from eventlog.verify import verify_replica_against
from tests.kit.builders import put

MISMATCH = SnapshotCause(SnapshotReason.DIGEST_MISMATCH, "digest mismatch")


def _digest(*changes) -> int:
    """The digest of a node holding exactly these puts' pods."""
    return digest_of(PodEntry(c.namespace, c.name, 0, c.manifest) for c in changes)


def _interleaved(store: LogStore) -> None:
    store.append([put("edge01", "a")])  # 1
    store.append([put("edge02", "x")])  # 2
    store.append([put("edge02", "y")])  # 3
    store.append([put("edge01", "b")])  # 4


def test_a_replica_at_another_nodes_offset_with_another_history_gets_a_snapshot(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _interleaved(store)
        # a deposed leader's tail: the agent applied edge01 events this log never had, ending at offset 2
        theirs = _digest(put("edge01", "a"), put("edge01", "c"))
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=2, digest=theirs) == MISMATCH
        ours = _digest(put("edge01", "a"))
        for offset in (1, 2, 3):
            assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=offset, digest=ours) is None
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=0, digest=0) is None
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=0, digest=ours) == MISMATCH


def test_verify_checks_a_replica_digest_as_of_its_applied_offset(tmp_path):
    with LogStore(tmp_path / "log") as store, ReplicaStore(tmp_path / "agent", node="edge01") as replica:
        _interleaved(store)
        tail = [Event(1, 0, "edge01", "put", "default", "a", put("edge01", "a").manifest),
                Event(2, 0, "edge01", "put", "default", "c", put("edge01", "c").manifest)]  # never this log's offset 2
        replica.install_snapshot(Snapshot(store.log_id, "edge01", 0, 0, ()))
        replica.apply(tail, log_id=store.log_id)
        expected = format_digest(_digest(put("edge01", "a")))
        assert f"replica of edge01 at 2 hashes to {format_digest(replica.state().digest)}, the log says {expected}" in (
            verify_replica_against(replica, store))


def test_after_compaction_an_offset_with_no_retained_node_event_uses_the_base(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _interleaved(store)
        store.compact(keep_last=2)  # keeps 3 and 4; edge01 compacted through 1
        assert store.node_state("edge01").compacted_through == 1
        ours = _digest(put("edge01", "a"))
        assert store.digest_through("edge01", 2) == ours == digest_of(store.base("edge01").values())
        for offset in (1, 2, 3):
            assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=offset, digest=ours) is None
            wrong = ours ^ 1
            assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=offset, digest=wrong) == MISMATCH
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=0, digest=0) == SnapshotCause(
            SnapshotReason.COMPACTED, "offset 0 was compacted")
        store.compact(keep_last=1)  # edge02 compacted through 3, its base is {x, y}
        assert store.digest_through("edge02", 3) == store.node_state("edge02").digest
        assert store.resume_reason("edge02", log_id=store.log_id, applied_offset=2, digest=0) == SnapshotCause(
            SnapshotReason.COMPACTED, "offset 2 was compacted")


def test_digest_through_every_offset_is_the_replayed_state(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _interleaved(store)
        for node in ("edge01", "edge02"):
            for offset in range(0, 5):
                assert store.digest_through(node, offset) == digest_of(log_state_at(store, node, offset).values())
        assert store.digest_through("nobody", 3) == 0


def test_node_head_through_an_offset(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _interleaved(store)
        assert [store.node_head_through("edge01", o) for o in range(6)] == [0, 1, 1, 1, 4, 4]
        assert [store.node_head_through("edge02", o) for o in range(6)] == [0, 0, 2, 3, 3, 3]
        assert store.node_head_through("edge0", 4) == 0 and store.node_head_through("edge021", 4) == 0
        store.compact(keep_last=1)  # edge01 compacted through 1, edge02 through 3
        assert store.node_head_through("edge01", 3) == 1 and store.node_head_through("edge02", 4) == 3
        with pytest.raises(CompactedError, match="node edge02 through offset 2 were compacted"):
            store.node_head_through("edge02", 2)


def test_read_node_raw_stops_at_through(tmp_path):
    with LogStore(tmp_path / "log") as store:
        for v in range(5):
            store.append([put("edge01", "a", v), put("edge02", "a", v)])  # edge01 at odd offsets
        offsets = lambda raws: [decode_event(r).offset for r in raws]  # noqa: E731
        assert offsets(store.read_node_raw("edge01", after=1, through=6)) == [3, 5]
        assert offsets(store.read_node_raw("edge01", after=1, through=7, limit=1)) == [3]
        assert offsets(store.read_node_raw("edge01", through=0)) == []
        assert offsets(store.read_node_raw("edge01", after=3)) == [5, 7, 9]
