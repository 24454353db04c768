"""The agent replica: snapshot install, batches applied once, journal and cursor in one transaction."""

from __future__ import annotations

import dataclasses

import pytest

from eventlog import CorruptRecordError, DigestMismatchError, LogMismatchError, LogStore, ReplicaStore
from eventlog.verify import verify_replica, verify_replica_against
from tests.kit.builders import delete, put


@pytest.fixture
def log(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", f"p{i}") for i in range(4)] + [put("edge02", "x")])
        yield store


def test_snapshot_then_events_equals_the_log(tmp_path, log):
    with ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        assert verify_replica(rep) == []
        res = rep.install_snapshot(log.snapshot("edge01"))
        assert res.applied_offset == 4 and rep.cursor().log_id == log.log_id
        log.append([put("edge01", "p1", 2), delete("edge01", "p0"), put("edge02", "y")])
        events = log.read_node("edge01", after=4)
        res = rep.apply(events, log_id=log.log_id)
        assert (res.applied, res.applied_offset) == (2, 7)
        assert res.digest == log.node_state("edge01").digest == log.digest_at("edge01", 7)
        assert rep.pods() == log.pods("edge01")
        assert verify_replica(rep) == [] and verify_replica_against(rep, log) == []


def test_a_batch_changing_a_pod_several_times_ends_as_the_log_does(tmp_path, log):
    with ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        rep.install_snapshot(log.snapshot("edge01"))
        log.append([put("edge01", "p1", 2), delete("edge01", "p1"), put("edge01", "p1", 3), delete("edge01", "p2"),
                    put("edge01", "p2", 4), put("edge01", "new", 1), delete("edge01", "new")])
        records = log.read_node_raw("edge01", after=4)
        res = rep.apply_records(records, log_id=log.log_id)  # one transaction, as a catching-up agent does
        assert (res.applied, res.applied_offset) == (7, 12)
        assert rep.pods() == log.pods("edge01") and rep.state().pod_count == 4
        assert res.digest == log.node_state("edge01").digest
        assert [j.event.offset for j in rep.journal() if j.event] == list(range(6, 13))
        assert verify_replica(rep) == [] and verify_replica_against(rep, log) == []


def test_a_replayed_batch_changes_nothing(tmp_path, log):
    with ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        rep.install_snapshot(log.snapshot("edge01"))
        log.append([put("edge01", "p9")])
        events = log.read_node("edge01", after=4)
        rep.apply(events, log_id=log.log_id)
        again = rep.apply(events, log_id=log.log_id)
        assert (again.applied, again.skipped) == (0, 1)
        assert len([j for j in rep.journal() if j.event]) == 1
        assert verify_replica(rep) == []


def test_events_of_another_log_and_bad_snapshots_are_refused(tmp_path, log):
    with ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        with pytest.raises(LogMismatchError):
            rep.apply(log.read_node("edge01"), log_id=log.log_id)
        snap = log.snapshot("edge01")
        with pytest.raises(DigestMismatchError):
            rep.install_snapshot(dataclasses.replace(snap, digest=snap.digest ^ 1))
        assert rep.pods() == {} and rep.cursor().applied_offset == 0


def test_journal_records_snapshots_and_events_with_times(tmp_path, log):
    with ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        rep.install_snapshot(log.snapshot("edge01"), applied_ns=10)
        log.append([delete("edge01", "p3")])
        rep.apply(log.read_node("edge01", after=4), log_id=log.log_id, applied_ns=20)
        snap, ev = rep.journal()
        assert (snap.seq, snap.applied_ns, snap.snapshot_offset, snap.snapshot_pods) == (1, 10, 4, 4)
        assert (ev.seq, ev.applied_ns, ev.event.offset, ev.event.op) == (2, 20, 6, "delete")
        assert rep.compact_journal(keep_last=1) == 1 and [j.seq for j in rep.journal()] == [2]
        assert verify_replica(rep) == []


def test_a_replica_belongs_to_one_node(tmp_path, log):
    from eventlog import NotAStoreError
    ReplicaStore(tmp_path / "rep", node="edge01").close()
    with pytest.raises(NotAStoreError):
        ReplicaStore(tmp_path / "rep", node="edge02")


def test_verify_against_the_log_finds_a_diverged_replica(tmp_path, log):
    with ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        rep.install_snapshot(log.snapshot("edge01"))
        log.append([put("edge01", "p1", 5)])
        wrong = dataclasses.replace(log.read_node("edge01", after=4)[0], manifest=b'{"other":1}')
        rep.apply([wrong], log_id=log.log_id)
        assert verify_replica(rep) == []  # self-consistent
        problems = verify_replica_against(rep, log)
        assert problems and "hashes to" in problems[0]


def test_applying_wire_records_equals_applying_events(tmp_path, log):
    log.append([put("edge01", "p1", 2), delete("edge01", "p0"), put("edge01", "p7")])
    with ReplicaStore(tmp_path / "a", node="edge01") as a, ReplicaStore(tmp_path / "b", node="edge01") as b:
        for rep in (a, b):
            rep.install_snapshot(log.snapshot("edge01"), applied_ns=1)
        log.append([put("edge01", "p1", 3), delete("edge01", "p2")])
        raws = log.read_node_raw("edge01", after=4)
        ra = a.apply(log.read_node("edge01", after=4), log_id=log.log_id, applied_ns=2)
        rb = b.apply_records(raws, log_id=log.log_id, applied_ns=2)
        assert ra == rb and a.pods() == b.pods() == log.pods("edge01")
        assert a.journal() == b.journal()  # the received bytes are journalled as they came
        assert b.apply_records(raws, log_id=log.log_id).applied == 0  # a replay is skipped
        with pytest.raises(CorruptRecordError):
            b.apply_records([raws[0][:20]], log_id=log.log_id)
        assert verify_replica_against(b, log) == []
