"""The stores' readers: every read of one `with store.reader()` sees the same state, whatever is written meanwhile."""

from __future__ import annotations

from eventlog import LogStore, ReplicaStore, decode_event
from eventlog.encoding import INDEX_NODE, INDEX_OFFSET, decode_journal, from_u64, node_index_key, split_view_key, view_key
from tests.kit.builders import delete, put


def test_a_log_reader_sees_one_state_while_the_log_is_appended_and_compacted(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", "a", 1), put("edge01", "b", 1), put("edge02", "a", 1)])
        with store.reader() as r:
            store.append([put("edge01", "a", 2), delete("edge01", "b"), put("edge03", "c", 1)])
            store.compact(keep_last=2)
            assert (r.head_offset(), r.first_offset()) == (3, 1)
            assert [st.node for st in r.nodes()] == ["edge01", "edge02"]
            assert sorted(r.pods("edge01")) == [("default", "a"), ("default", "b")]
            assert r.all_bases() == {}
            assert [decode_event(v).offset for v in r.node_records("edge01")] == [1, 2]
            assert [from_u64(k) for k, _ in r.records(after=1)] == [2, 3]
            assert r.index_counts() == {"edge01": 2, "edge02": 1}
            assert r.index_digest("edge01", 2) == r.node_state("edge01").digest
        with store.reader() as r:  # a new reader sees the writes
            assert (r.head_offset(), r.first_offset()) == (6, 5)
            assert [decode_event(v).offset for v in r.node_records("edge01", through=4)] == []
            assert sorted(r.base("edge01")) == [("default", "a"), ("default", "b")]  # as of offset 4
            assert r.index_digest("edge01", 1) is None  # compacted


def test_a_replica_reader_sees_one_state_while_events_are_applied(tmp_path):
    with LogStore(tmp_path / "log") as log, ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        log.append([put("edge01", "a", 1)])
        rep.install_snapshot(log.snapshot("edge01"))
        with rep.reader() as r:
            log.append([put("edge01", "a", 2)])
            rep.apply(log.read_node("edge01", after=1), log_id=log.log_id)
            assert r.cursor().applied_offset == 1 and r.journal_seq() == 1
            assert [decode_journal(seq, v).snapshot_offset for seq, v in r.journal_records()] == [1]
            assert list(r.all_pods()) == ["edge01"]
        with rep.reader() as r:
            assert r.cursor().applied_offset == 2
            assert [seq for seq, _ in r.journal_records(after_seq=1)] == [2]


def test_keys_are_laid_out_in_one_place():
    assert view_key("edge01", "ns", "pod") == b"edge01\0ns\0pod"
    assert split_view_key(view_key("edge01", "ns", "pod")) == ("edge01", "ns", "pod")
    assert view_key("edge01") == b"edge01\0" and view_key("edge01", "ns") == b"edge01\0ns\0"
    key = node_index_key("edge01", 7)
    assert key[INDEX_NODE] == b"edge01" and from_u64(key[INDEX_OFFSET]) == 7
