"""Replicating a log record for record (a standby following its leader): byte-identical, all or nothing."""

from __future__ import annotations

import random

import pytest
from xxhash import xxh3_64_intdigest

from eventlog import CorruptRecordError, DivergedError, LogStore, OffsetOutOfRangeError
from eventlog.verify import verify_log
from tests.kit.builders import delete, put
from tests.kit.files import log_records
from tests.kit.processes import run_cli


def _random_history(store: LogStore, rng: random.Random, *, changes: int) -> None:
    """Puts, re-puts, deletes and no-ops over a few nodes, in batches of random size."""
    done = 0
    while done < changes:
        batch = []
        for _ in range(rng.randint(1, 40)):
            node, pod = f"edge{rng.randint(0, 4)}", f"p{rng.randint(0, 15)}"
            batch.append(delete(node, pod) if rng.random() < 0.3 else put(node, pod, rng.randint(0, 3)))
        store.append(batch, time_ns=rng.randint(1, 10**18))
        done += len(batch)


def _replicate(src: LogStore, dest: LogStore, rng: random.Random) -> None:
    records = log_records(src, after=dest.head_offset)
    while records:
        n = rng.randint(1, 64)
        got = dest.append_records(records[:n])
        assert (got.first_offset, len(got)) == (dest.head_offset - len(got) + 1, min(n, len(records)))
        records = records[n:]


def _same_store(a: LogStore, b: LogStore) -> None:
    assert log_records(a) == log_records(b)
    assert (a.head_offset, a.first_offset, a.log_bytes) == (b.head_offset, b.first_offset, b.log_bytes)
    assert a.nodes() == b.nodes()
    assert a.all_pods() == b.all_pods()
    for st in a.nodes():
        for e in a.read_node(st.node, limit=10**6):
            assert a.digest_at(st.node, e.offset) == b.digest_at(st.node, e.offset)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replicated_records_make_a_byte_identical_store(tmp_path, seed):
    rng = random.Random(seed)
    with LogStore(tmp_path / "a") as a, LogStore(tmp_path / "b") as b:
        _random_history(a, rng, changes=600)
        _replicate(a, b, rng)
        _same_store(a, b)
        _random_history(a, rng, changes=200)  # a follower picks up where it was
        _replicate(a, b, rng)
        _same_store(a, b)
        assert verify_log(b) == []
    res = run_cli("verify", str(tmp_path / "b"))
    assert res.returncode == 0 and res.stdout.startswith("ok: manager store"), res.stderr


def test_what_append_records_returns_is_what_was_appended(tmp_path):
    with LogStore(tmp_path / "a") as a, LogStore(tmp_path / "b") as b:
        a.append([put("edge01", "a"), put("edge02", "b")], time_ns=5)
        a.append([delete("edge01", "a")], time_ns=9)
        got = b.append_records(log_records(a))
        assert (got.first_offset, got.head_offset, len(got)) == (1, 3, 3)
        assert got.nodes == frozenset({"edge01", "edge02"})
        assert list(got) == a.read() and [e.time_ns for e in got] == [5, 5, 9]
        nothing = b.append_records([])
        assert not nothing and (nothing.first_offset, nothing.head_offset) == (4, 3)


def test_record_and_record_hash_read_the_stored_bytes(tmp_path):
    with LogStore(tmp_path / "a") as a:
        assert a.record_hash(0) == 0 and a.record_hash(1) is None
        a.append([put("edge01", f"p{i}") for i in range(4)])
        with a.reader() as r:
            raw = r.record(2)
            assert r.record(0) is None and r.record(5) is None
        assert raw == a.read_node_raw("edge01", after=1, limit=1)[0]
        assert a.record_hash(2) == xxh3_64_intdigest(raw) and a.record_hash(5) is None
        a.compact(keep_last=2)
        assert a.record_hash(2) is None and a.record_hash(0) is None and a.record_hash(3) is not None


def _refused(store: LogStore, records: list[bytes], error: type[Exception], expect: str) -> None:
    before = (log_records(store), store.nodes(), store.all_pods(), store.log_bytes)
    with pytest.raises(error, match=expect) as exc:
        store.append_records(records)
    assert "\n" not in str(exc.value)
    assert (log_records(store), store.nodes(), store.all_pods(), store.log_bytes) == before


def test_gaps_and_repeats_are_refused_with_nothing_written(tmp_path):
    with LogStore(tmp_path / "a") as a, LogStore(tmp_path / "b") as b:
        a.append([put("edge01", f"p{i}") for i in range(6)])
        recs = log_records(a)
        b.append_records(recs[:2])
        _refused(b, recs[3:5], OffsetOutOfRangeError, "start at offset 4, but the head of this log is 2")
        _refused(b, recs[1:4], OffsetOutOfRangeError, "start at offset 2, but the head of this log is 2")
        _refused(b, [recs[2], recs[4]], OffsetOutOfRangeError, "has offset 5, expected 4")
        _refused(b, [recs[2], recs[2]], OffsetOutOfRangeError, "has offset 3, expected 4")
        assert b.head_offset == 2


def test_undecodable_records_are_refused_with_nothing_written(tmp_path):
    with LogStore(tmp_path / "a") as a, LogStore(tmp_path / "b") as b:
        a.append([put("edge01", f"p{i}") for i in range(3)])
        recs = log_records(a)
        _refused(b, [recs[0], b"\x01garbage"], CorruptRecordError, "record 1 of the batch")
        _refused(b, [recs[0], recs[1][:30]], CorruptRecordError, "record 1 of the batch")
        _refused(b, [b"\x09" + recs[0][1:]], CorruptRecordError, "record format 9")
        _refused(b, [b""], CorruptRecordError, "record 0 of the batch")


def test_records_that_diverge_from_this_view_are_refused_with_nothing_written(tmp_path):
    with LogStore(tmp_path / "a") as a, LogStore(tmp_path / "b") as b:
        a.append([put("edge01", "p", 1)])
        a.append([delete("edge01", "p")])
        a.append([put("edge01", "p", 1)])  # 3: puts p again, which b's history never deleted
        b.append_records(log_records(a)[:1])
        b.append([put("edge01", "q")])  # 2: b's own tail, not the leader's
        _refused(b, log_records(a, after=2), DivergedError, "record 3 puts pod default/p of node edge01")

    with LogStore(tmp_path / "c") as c, LogStore(tmp_path / "d") as d:
        c.append([put("edge01", "p")])
        c.append([put("edge01", "q")])
        c.append([delete("edge01", "q")])  # 3: deletes q, which d never got
        d.append_records(log_records(c)[:1])
        d.append([put("edge01", "r")])
        _refused(d, log_records(c, after=2), DivergedError, "record 3 deletes pod default/q of node edge01")
