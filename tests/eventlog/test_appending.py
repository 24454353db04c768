"""Appending: gap-free offsets, one transaction per batch, idempotent changes, map growth, reopening."""

from __future__ import annotations

import pytest

from eventlog import Change, LogStore, digest_of
from eventlog.verify import verify_log
from tests.kit.builders import delete, put


def test_offsets_start_at_one_and_are_gap_free(tmp_path):
    with LogStore(tmp_path / "log") as store:
        assert store.head_offset == 0 and store.first_offset == 1
        a = store.append([put("edge01", f"p{i}") for i in range(3)])
        b = store.append([put("edge02", "p0"), delete("edge01", "p1")])
        assert [e.offset for e in [*a, *b]] == [1, 2, 3, 4, 5]
        assert store.head_offset == 5
        assert [e.offset for e in store.read()] == [1, 2, 3, 4, 5]
        assert verify_log(store) == []


def test_events_keep_what_changed_and_why(tmp_path):
    with LogStore(tmp_path / "log") as store:
        (e,) = store.append([put("edge01", "web", 3)], time_ns=123)
        assert (e.time_ns, e.node, e.op, e.namespace, e.name) == (123, "edge01", "put", "default", "web")
        assert e.source.uid == "uid-edge01" and e.source.resource_version == "3"
        assert store.read() == [e]


def test_unchanged_state_appends_nothing(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", "web", 1), put("edge01", "db", 1)])
        assert store.append([put("edge01", "web", 1), delete("edge01", "nope")]) == []
        assert store.head_offset == 2
        (e,) = store.append([put("edge01", "web", 1), put("edge01", "web", 2)])
        assert e.offset == 3 and e.manifest == put("edge01", "web", 2).manifest


def test_the_result_is_the_appended_events_built_on_demand(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", "a")])
        got = store.append([put("edge01", "b"), put("edge02", "a"), delete("edge01", "a")], time_ns=7)
        assert (got.first_offset, got.head_offset, len(got)) == (2, 4, 3)
        assert got.nodes == frozenset({"edge01", "edge02"})
        assert got == store.read(after=1) and list(got) == store.read(after=1)
        assert got[-1].offset == 4 and got[-1].op == "delete" and got[0].time_ns == 7
        assert [e.offset for e in got[1:]] == [3, 4]
        with pytest.raises(IndexError):
            got[3]
        nothing = store.append([put("edge01", "b")])
        assert not nothing and nothing == [] and (nothing.first_offset, nothing.head_offset) == (5, 4)


def test_a_pod_changed_several_times_in_one_batch_ends_as_its_last_change(tmp_path):
    with LogStore(tmp_path / "log") as store:
        got = store.append([put("edge01", "a", 1), put("edge01", "a", 2), delete("edge01", "a"),
                            put("edge01", "b", 1), delete("edge01", "b"), put("edge01", "b", 2),
                            delete("edge01", "a")])  # already gone: appends nothing
        assert [(e.op, e.name) for e in got] == [("put", "a"), ("put", "a"), ("delete", "a"),
                                                 ("put", "b"), ("delete", "b"), ("put", "b")]
        pods = store.pods("edge01")
        assert set(pods) == {("default", "b")} and pods[("default", "b")].offset == 6
        assert pods[("default", "b")].manifest == put("edge01", "b", 2).manifest
        assert store.node_state("edge01").pod_count == 1
        assert verify_log(store) == []


def test_view_and_digest_follow_every_change(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", "a"), put("edge01", "b"), put("edge02", "a")])
        store.append([delete("edge01", "a"), put("edge01", "b", 7)])
        pods = store.pods("edge01")
        assert set(pods) == {("default", "b")} and pods[("default", "b")].offset == 5
        st = store.node_state("edge01")
        assert (st.head_offset, st.pod_count, st.digest) == (5, 1, digest_of(pods.values()))
        assert store.node_state("unknown") is None


def test_an_invalid_change_appends_nothing_of_its_batch(tmp_path):
    with LogStore(tmp_path / "log") as store:
        with pytest.raises(ValueError):
            store.append([put("edge01", "ok"), Change("edge01", "put", "default", "bad", None)])
        with pytest.raises(ValueError):
            store.append([Change("edge\0x", "delete", "default", "p")])
        assert store.head_offset == 0 and store.pods("edge01") == {}


def test_a_full_map_grows_instead_of_failing(tmp_path):
    with LogStore(tmp_path / "log", map_size=64 * 1024) as store:
        for b in range(20):
            store.append([put(f"edge{i % 3}", f"p{i}", b) for i in range(50)])
        assert store.head_offset == 1000
        assert verify_log(store) == []


def test_reopening_keeps_log_id_and_events(tmp_path):
    with LogStore(tmp_path / "log") as store:
        store.append([put("edge01", "a")])
        log_id = store.log_id
    with LogStore(tmp_path / "log") as store:
        assert store.log_id == log_id and len(log_id) == 32
        assert store.append([put("edge01", "b")])[0].offset == 2
    with LogStore(tmp_path / "other") as other:
        assert other.log_id != log_id


def test_reading_one_node_after_an_offset(tmp_path):
    with LogStore(tmp_path / "log") as store:
        for v in range(10):
            store.append([put("edge01", "a", v), put("edge02", "a", v)])
        evs = store.read_node("edge01", after=0, limit=4)
        assert [e.offset for e in evs] == [1, 3, 5, 7]
        assert [e.offset for e in store.read_node("edge01", after=7)] == [9, 11, 13, 15, 17, 19]
        assert store.read_node("edge03") == []
        assert [e.offset for e in store.iter_events(after=15, chunk=2)] == [16, 17, 18, 19, 20]
