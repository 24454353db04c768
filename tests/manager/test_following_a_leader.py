"""A standby follows the leader's log: same log_id, same offsets, the same record bytes.

Against tests/kit's FakeLeader (the Follow RPC over a real LogStore): an empty standby copies
the store then follows every append; a restarted one resumes without a copy; one whose log
diverged (a deposed leader's tail, or other bytes at its head) is replaced by a copy;
records that do not fit make it ask for a copy; acks follow commits.
"""

from __future__ import annotations

from pathlib import Path

from eventlog import LogStore
from manager.following import Follower
from manager.peer_tls import peer_channel
from tests.kit.builders import put
from tests.kit.files import log_records
from tests.kit.follow_leaders import FakeLeader, Following
from tests.kit.waits import run, wait_until


def standby(store_dir: Path, store: LogStore, address: str, **options: object) -> Follower:
    return Follower(store_dir, store, identity="edge-manager-1_0badcafe", leader_address=lambda: address,
                    channel=peer_channel(None), backoff_initial=0.05, backoff_max=0.2, **options)


def append(store: LogStore, n: int, *, node: str = "edge01", rev: int = 0) -> None:
    store.append([put(node, f"app{i:03d}", rev) for i in range(n)])


def test_an_empty_standby_copies_the_store_then_follows_every_append_byte_for_byte(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    append(leader_store, 40)
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            follower = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(follower) as f:
                await wait_until(lambda: follower.head_offset == 40, what="the copy")
                for rev in range(1, 6):  # appends while it follows, in several batches
                    append(leader_store, 40, rev=rev)
                    append(leader_store, 3, node=f"edge{rev:02d}", rev=rev)
                await wait_until(lambda: follower.head_offset == leader_store.head_offset, what="the appends")
                await wait_until(lambda: leader.acks and leader.acks[-1] == leader_store.head_offset, what="the ack")
            assert [mode for mode, _ in leader.welcomes] == ["COPY"]
            assert follower.copies == 1 and follower.records_applied == leader_store.head_offset - 40
            assert follower.leader_head == leader_store.head_offset and follower.lag == 0
            assert leader.acks == sorted(leader.acks)  # each ack is a commit, in order
            assert f.store is not None
            return f.store

    store = run(scenario())
    assert store.log_id == leader_store.log_id
    assert log_records(store) == log_records(leader_store)
    assert store.all_pods() == leader_store.all_pods()
    assert not (tmp_path / "standby" / "eventlog.incoming").exists()


def test_a_restarted_standby_resumes_where_it_stopped_without_a_copy(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    append(leader_store, 20)
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            first = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(first) as f:
                await wait_until(lambda: first.head_offset == 20, what="the copy")
            assert f.store is not None
            f.store.close()  # the process stops
            append(leader_store, 20, rev=1)  # the leader goes on meanwhile
            second = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(second) as g:
                await wait_until(lambda: second.head_offset == 40, what="the resume")
            assert second.copies == 0
            assert leader.welcomes[-1] == ("RESUME", "")
            assert leader.hellos[-1].head_offset == 20 and leader.hellos[-1].head_hash == leader_store.record_hash(20)
            assert g.store is not None
            return g.store

    store = run(scenario())
    assert log_records(store) == log_records(leader_store)


def test_a_standby_with_a_tail_the_leader_never_had_is_replaced_by_a_copy(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    append(leader_store, 10)
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            first = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(first) as f:
                await wait_until(lambda: first.head_offset == 10, what="the copy")
            assert f.store is not None
            append(f.store, 5, node="deposed", rev=9)  # as a deposed leader appends what no one else has
            assert f.store.head_offset == 15
            again = standby(store_dir, f.store, leader.address)
            async with Following(again) as g:
                await wait_until(lambda: again.copies == 1, what="the second copy")
                append(leader_store, 10, rev=1)
                await wait_until(lambda: again.head_offset == 20, what="the appends")
            assert leader.welcomes[-1][0] == "COPY" and "beyond" in leader.welcomes[-1][1]
            assert g.store is not None
            return g.store

    store = run(scenario())
    assert log_records(store) == log_records(leader_store)
    assert "deposed" not in store.all_pods()


def test_a_standby_whose_head_holds_other_bytes_is_replaced_by_a_copy(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    append(leader_store, 10)
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            first = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(first) as f:
                await wait_until(lambda: first.head_offset == 10, what="the copy")
            assert f.store is not None
            append(f.store, 3, node="edge02", rev=7)  # offsets 11..13 here ...
            append(leader_store, 3, node="edge03", rev=8)  # ... and other records at 11..13 on the leader
            again = standby(store_dir, f.store, leader.address)
            async with Following(again) as g:
                await wait_until(lambda: again.copies == 1 and again.head_offset == 13, what="the copy")
            assert leader.welcomes[-1][0] == "COPY" and "differs" in leader.welcomes[-1][1]
            assert g.store is not None
            return g.store

    store = run(scenario())
    assert log_records(store) == log_records(leader_store)


def test_records_that_leave_a_gap_drop_the_stream_and_the_standby_asks_for_a_copy(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    append(leader_store, 10)
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store, skip_records=1) as leader:  # records start one past the head
            follower = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(follower) as f:
                await wait_until(lambda: follower.copies == 1, what="the copy")
                append(leader_store, 5, rev=1)  # 11..15; the leader sends 12..15
                await wait_until(lambda: follower.copies == 2 and follower.head_offset == 15, what="the repair")
            assert "do not fit" in follower.last_error
            # the second Hello came from a store at head 10 of the leader's log: it asked for a copy on purpose
            assert [h.log_id for h in leader.hellos] == ["", ""]
            assert [mode for mode, _ in leader.welcomes] == ["COPY", "COPY"]
            assert f.store is not None
            return f.store

    store = run(scenario())
    assert log_records(store) == log_records(leader_store)


def test_a_record_that_would_not_change_the_view_as_it_did_on_the_leader_makes_the_standby_ask_for_a_copy(
        tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append([put("edge01", "app", 0)])
    other = LogStore(tmp_path / "other" / "eventlog")  # another history: offset 2 puts what offset 1 put here
    other.append([put("edge01", "app", 1)])
    other.append([put("edge01", "app", 0)])
    foreign = log_records(other)[1]
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            follower = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(follower) as f:
                await wait_until(lambda: follower.copies == 1, what="the copy")
                leader.inject = [foreign]
                await wait_until(lambda: follower.copies == 2, what="a copy asked for")
            assert "do not fit" in follower.last_error and "diverged" in follower.last_error
            assert [h.log_id for h in leader.hellos] == ["", ""]
            assert f.store is not None
            return f.store

    store = run(scenario())
    assert log_records(store) == log_records(leader_store)
