"""Views and snapshots: a snapshot is the whole view at one offset, digests agree, resume decisions."""

from __future__ import annotations

import pytest

from eventlog import CompactedError, LogStore, OffsetOutOfRangeError, SnapshotCause, SnapshotReason, digest_of
from eventlog.replay import log_state_at
from tests.kit.builders import delete, put


def test_snapshot_is_the_view_at_the_node_head(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", f"p{i}") for i in range(5)] + [put("edge02", "x")])
        store.append([delete("edge01", "p2")])
        snap = store.snapshot("edge01")
        assert snap.log_id == store.log_id and snap.offset == 7
        assert [p.name for p in snap.pods] == ["p0", "p1", "p3", "p4"]
        assert snap.digest == digest_of(snap.pods) == store.node_state("edge01").digest
        empty = store.snapshot("nobody")
        assert (empty.offset, empty.digest, empty.pods) == (0, 0, ())


def test_digest_at_every_offset_of_the_node(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", "a")])
        store.append([put("edge02", "a")])
        store.append([put("edge01", "b")])
        assert store.digest_at("edge01", 1) == digest_of(log_state_at(store, "edge01", 1).values())
        assert store.digest_at("edge01", 3) == store.node_state("edge01").digest
        assert store.digest_at("edge01", 2) is None  # not an event of edge01
        assert store.digest_at("nobody", 0) == 0


def test_state_as_of_any_offset(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", "a", 1)])
        store.append([put("edge01", "a", 2), put("edge01", "b")])
        store.append([delete("edge01", "a")])
        assert log_state_at(store, "edge01", 0) == {}
        assert log_state_at(store, "edge01", 1)[("default", "a")].manifest == put("edge01", "a", 1).manifest
        assert set(log_state_at(store, "edge01", 3)) == {("default", "a"), ("default", "b")}
        assert log_state_at(store, "edge01", 4) == store.pods("edge01")
        with pytest.raises(OffsetOutOfRangeError):
            log_state_at(store, "edge01", 5)


def test_resume_or_snapshot_decisions(tmp_path):
    with LogStore(tmp_path / "log") as store:
        for v in range(5):
            store.append([put("edge01", "a", v)])
        d3 = store.digest_at("edge01", 3)
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=3, digest=d3) is None
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=3, digest=d3 ^ 1) == SnapshotCause(
            SnapshotReason.DIGEST_MISMATCH, "digest mismatch")
        assert store.resume_reason("edge01", log_id="", applied_offset=0, digest=0) == SnapshotCause(
            SnapshotReason.EMPTY_REPLICA, "empty replica")
        assert store.resume_reason("edge01", log_id="other", applied_offset=3, digest=d3) == SnapshotCause(
            SnapshotReason.UNKNOWN_LOG_ID, "unknown log_id")
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=9, digest=0) == SnapshotCause(
            SnapshotReason.BEYOND_HEAD, "applied offset 9 is beyond the node's head 5")
        store.compact(keep_last=1)
        assert store.resume_reason("edge01", log_id=store.log_id, applied_offset=2, digest=0) == SnapshotCause(
            SnapshotReason.COMPACTED, "offset 2 was compacted")
        with pytest.raises(CompactedError):
            store.check_offset(2)
        store.check_offset(4)
