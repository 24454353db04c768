"""verify finds what it claims to check: gaps, torn records, views or digests that disagree with replay."""

from __future__ import annotations

import pytest

from eventlog import LogStore, ReplicaStore
from eventlog.encoding import encode_node, encode_view_value, node_index_key, u64, view_key
from eventlog.verify import verify_log, verify_replica
from tests.kit.builders import delete, put
from tests.kit.files import raw_env


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "log"
    with LogStore(path) as store:
        for v in range(4):
            store.append([put("edge01", "a", v), put("edge01", f"b{v}"), put("edge02", "a", v)])
        store.append([delete("edge01", "b0")])
        store.compact(keep_last=8)
        assert verify_log(store) == []
    return path


class _Raw:
    """A write transaction on the raw environment; db(name) opens a named database inside it."""

    def __init__(self, env, txn):
        self.env, self.txn = env, txn

    def open_db(self, name: bytes):
        return self.env.open_db(name, txn=self.txn, create=False)


def _tamper(path, fn):
    env = raw_env(path)
    try:
        with env.begin(write=True) as txn:
            fn(_Raw(env, txn), txn)
    finally:
        env.close()


def _problems(path):
    with LogStore(path, readonly=True) as store:
        return verify_log(store)


def test_a_gap_in_the_offsets(log_path):
    _tamper(log_path, lambda env, txn: txn.delete(u64(8), db=env.open_db(b"log")))
    problems = _problems(log_path)
    assert any("offsets 8 are missing" in p for p in problems)


def test_a_view_that_replay_does_not_explain(log_path):
    _tamper(log_path, lambda env, txn: txn.put(view_key("edge01", "default", "ghost"),
                                               encode_view_value(3, 0, b"{}"), db=env.open_db(b"view")))
    problems = _problems(log_path)
    assert any("differs from the view" in p and "ghost" in p for p in problems)
    assert any("pod_count" in p for p in problems)


def test_a_wrong_node_digest_and_index_digest(log_path):
    def fn(env, txn):
        nodes = env.open_db(b"nodes")
        txn.put(b"edge02", encode_node(13, 12345, 1, 0), db=nodes)
        txn.put(node_index_key("edge01", 13), u64(999), db=env.open_db(b"node_index"))
    _tamper(log_path, fn)
    problems = _problems(log_path)
    assert any("node edge02: stored digest" in p for p in problems)
    assert any("node index of edge01 at 13" in p for p in problems)


def test_a_corrupt_record(log_path):
    _tamper(log_path, lambda env, txn: txn.put(u64(10), b"\x07garbage", db=env.open_db(b"log")))
    assert any(p.startswith("event 10:") for p in _problems(log_path))


def test_a_replica_whose_journal_skips_or_disagrees(tmp_path, log_path):
    with LogStore(log_path, readonly=True) as log, ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        rep.install_snapshot(log.snapshot("edge01"))
    with LogStore(log_path) as log, ReplicaStore(tmp_path / "rep", node="edge01") as rep:
        log.append([put("edge01", "a", 9), put("edge01", "c")])
        rep.apply(log.read_node("edge01", after=13), log_id=log.log_id)
        assert verify_replica(rep) == []
    _tamper(tmp_path / "rep", lambda env, txn: txn.delete(u64(2), db=env.open_db(b"journal")))
    with ReplicaStore(tmp_path / "rep", readonly=True) as rep:
        problems = verify_replica(rep)
    assert any("journal lines 2 are missing" in p for p in problems)
    assert any("not in the replica as event" in p or "no journal line explains" in p for p in problems)
