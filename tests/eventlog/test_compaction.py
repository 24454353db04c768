"""Compaction: drops only a prefix (by count, age, size); the view stays whole; base + rest == view."""

from __future__ import annotations

import pytest

from eventlog import CompactedError, LogStore
from eventlog.replay import log_state_at, replay
from eventlog.verify import verify_log
from tests.kit.builders import delete, put


def _fill(store: LogStore, batches: int = 20) -> None:
    for b in range(batches):
        store.append([put(f"edge{i}", f"p{b % 4}", b) for i in range(3)] + [delete("edge0", f"p{(b + 1) % 4}")],
                     time_ns=(b + 1) * 10**9)


def test_keep_last_drops_a_prefix_and_keeps_the_view(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _fill(store)
        head, views = store.head_offset, {n: store.pods(f"edge{n}") for n in range(3)}
        res = store.compact(keep_last=10)
        assert res.first_offset == store.first_offset == head - 9 and res.dropped == head - 10
        assert [e.offset for e in store.read(after=head - 10)] == list(range(head - 9, head + 1))
        for n in range(3):
            node = f"edge{n}"
            assert store.pods(node) == views[n]
            rest = [e for e in store.read(after=head - 10) if e.node == node]
            assert replay(store.base(node), rest) == views[n]
        assert verify_log(store) == []


def test_compaction_by_age_and_by_size(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _fill(store)
        store.compact(older_than_ns=5 * 10**9)
        assert min(e.time_ns for e in store.read(after=store.first_offset - 1)) >= 5 * 10**9
        before = store.info().event_count
        total = sum(_raw_sizes(store))
        store.compact(max_bytes=total // 2)
        assert store.info().event_count < before
        assert sum(_raw_sizes(store)) <= total // 2
        assert verify_log(store) == []


def _raw_sizes(store: LogStore) -> list[int]:
    from eventlog import encode_event
    return [len(encode_event(e)) for e in store.read(after=store.first_offset - 1, limit=10**6)]


def test_compacted_offsets_need_a_snapshot(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _fill(store)
        store.compact(keep_last=5)
        first = store.first_offset
        with pytest.raises(CompactedError):
            store.read(after=0)
        with pytest.raises(CompactedError):
            store.read_node_raw("edge0", after=0)
        through = store.node_state("edge0").compacted_through
        assert through < first - 1  # edge0 had no event at first - 1
        with pytest.raises(CompactedError):
            log_state_at(store, "edge0", through - 1)
        # nothing of edge0 changed between its last compacted event and first - 1: the base is its state
        assert log_state_at(store, "edge0", through) == log_state_at(store, "edge0", first - 1) == store.base("edge0")
        assert log_state_at(store, "edge0", store.head_offset) == store.pods("edge0")


def test_compacting_everything_then_appending_again(tmp_path):
    with LogStore(tmp_path / "log") as store:
        _fill(store, 5)
        head = store.head_offset
        store.compact(keep_last=0)
        assert store.first_offset == head + 1 and store.read(after=head) == []
        assert verify_log(store) == []
        (e,) = store.append([put("edge1", "new")])
        assert e.offset == head + 1
        assert verify_log(store) == []
