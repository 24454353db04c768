"""A copy of the leader's store replaces the standby's only when it arrived whole and is what was announced.

An interrupted copy (the leader dies mid-copy) leaves the old store whole and open, and the
next copy completes; a copy whose size, log_id or head differ from the announcement, or that
exceeds what the standby accepts, is refused and deleted; a copy half installed when the
process died is finished or undone at the next start (eventlog.installing).
"""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from eventlog import LogStore
from eventlog import installing
from eventlog.installing import recover_store_dir
from manager.following import Follower, incoming_dir
from manager.peer_tls import peer_channel
from tests.kit.builders import put
from tests.kit.files import log_records
from tests.kit.follow_leaders import FakeLeader, Following, Lie
from tests.kit.waits import run, wait_until


def standby(store_dir: Path, store: LogStore, address: str, **options: object) -> Follower:
    return Follower(store_dir, store, identity="edge-manager-1_0badcafe", leader_address=lambda: address,
                    channel=peer_channel(None), backoff_initial=0.05, backoff_max=0.2, **options)


def own_log(store_dir: Path, n: int) -> tuple[LogStore, list[bytes]]:
    """A standby store with a log of its own (another log_id than the leader's), and its records."""
    store = LogStore(store_dir)
    store.append([put("edge09", f"mine{i}") for i in range(n)])
    return store, log_records(store)


def leader_log(path: Path, n: int) -> LogStore:
    store = LogStore(path)
    store.append([put("edge01", f"app{i:03d}", image="x" * 2000) for i in range(n)])  # a copy of many chunks
    return store


def test_a_copy_cut_off_midway_leaves_the_old_store_whole_and_the_next_copy_completes(tmp_path: Path) -> None:
    leader_store = leader_log(tmp_path / "leader" / "eventlog", 200)
    store_dir = tmp_path / "standby" / "eventlog"
    store, before = own_log(store_dir, 7)
    log_id = store.log_id

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store, chunk_bytes=4096, die_after_chunks=3) as leader:
            follower = standby(store_dir, store, leader.address)
            async with Following(follower) as f:
                await wait_until(lambda: len(leader.welcomes) >= 2, what="a copy cut off, then tried again")
                assert follower.copies == 0
                assert follower.store is store and store.log_id == log_id  # still open, still its own log
                assert log_records(store) == before
                assert follower.head_offset == 7
                leader.die_after_chunks = None  # the leader is back for good
                await wait_until(lambda: follower.copies == 1, what="the copy")
            assert f.store is not None
            return f.store

    new = run(scenario())
    assert log_records(new) == log_records(leader_store)
    assert not incoming_dir(store_dir).exists()


@pytest.mark.parametrize(("lie", "words"), [
    (Lie.SIZE, "not the"),
    (Lie.HEAD, "ends at"),
    (Lie.LOG_ID, "holds log"),
])
def test_a_copy_that_is_not_what_was_announced_is_refused(tmp_path: Path, lie: Lie, words: str) -> None:
    leader_store = leader_log(tmp_path / "leader" / "eventlog", 20)
    store_dir = tmp_path / "standby" / "eventlog"
    store, before = own_log(store_dir, 3)

    async def scenario() -> None:
        async with FakeLeader(leader_store, lie=lie) as leader:
            follower = standby(store_dir, store, leader.address)
            async with Following(follower):
                await wait_until(lambda: words in follower.last_error, what="the copy refused")
            assert follower.copies == 0 and follower.store is store

    run(scenario())
    assert log_records(store) == before
    assert not incoming_dir(store_dir).exists()


def test_a_copy_larger_than_the_standby_accepts_is_refused_before_it_is_whole(tmp_path: Path) -> None:
    leader_store = leader_log(tmp_path / "leader" / "eventlog", 200)
    store_dir = tmp_path / "standby" / "eventlog"
    store, before = own_log(store_dir, 3)

    async def scenario() -> None:
        async with FakeLeader(leader_store, chunk_bytes=4096) as leader:
            follower = standby(store_dir, store, leader.address, max_copy_bytes=64 << 10)
            async with Following(follower):
                await wait_until(lambda: "exceeds" in follower.last_error, what="the copy refused")
            assert follower.copies == 0

    run(scenario())
    assert log_records(store) == before
    assert not incoming_dir(store_dir).exists()


def test_stopping_a_standby_returns_its_store_open(tmp_path: Path) -> None:
    leader_store = leader_log(tmp_path / "leader" / "eventlog", 5)
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            follower = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(follower) as f:
                await wait_until(lambda: follower.head_offset == 5, what="the copy")
            assert f.store is follower.store
            return f.store

    store = run(scenario())
    store.append([put("edge01", "after")])  # the leader phase appends to it at once
    assert store.head_offset == 6
    recover_store_dir(store_dir)  # nothing half done: a no-op
    assert store.head_offset == 6


@pytest.mark.parametrize("failing", [".incoming", ".new"])
def test_an_install_that_fails_midway_leaves_one_whole_store_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   failing: str) -> None:
    """The rename of the received copy (step 1) or of the new store into place (step 3) fails once."""
    leader_store = leader_log(tmp_path / "leader" / "eventlog", 30)
    store_dir = tmp_path / "standby" / "eventlog"
    store, _ = own_log(store_dir, 3)
    old_log_id = store.log_id
    failed: list[Path] = []

    def rename(src: Path, dest: Path) -> None:
        if src.name.endswith(failing) and not failed:
            failed.append(src)
            raise OSError(f"injected: cannot rename {src}")
        os.rename(src, dest)

    monkeypatch.setattr(installing, "_rename", rename)

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            follower = standby(store_dir, store, leader.address)
            async with Following(follower) as f:
                await wait_until(lambda: failed and follower.head_offset == 30 and len(leader.hellos) >= 2,
                                 what="the store replaced, and a Hello from it")
            assert "injected" in follower.last_error
            # the next Hello came from the store recovery left: the old one whole (before the copy's rename) or
            # the copy (after it), never an empty or half-installed one
            assert leader.hellos[1].head_offset == (3 if failing == ".incoming" else 30)
            assert leader.hellos[1].log_id == (old_log_id if failing == ".incoming" else leader_store.log_id)
            assert f.store is not None
            return f.store

    new = run(scenario())
    assert log_records(new) == log_records(leader_store)
    assert new.head_offset == 30  # open and whole
    assert sorted(p.name for p in store_dir.parent.iterdir()) == ["eventlog"]


def test_a_copy_goes_to_disk_a_chunk_at_a_time_never_whole_in_memory(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    for batch in range(8):  # about 8 MiB of manifests
        leader_store.append([put("edge01", f"app{batch}-{i:03d}", image="x" * 8000) for i in range(128)])
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> tuple[int, int]:
        async with FakeLeader(leader_store, chunk_bytes=64 << 10) as leader:
            follower = standby(store_dir, LogStore(store_dir), leader.address)
            tracemalloc.start()
            try:
                async with Following(follower):
                    await wait_until(lambda: follower.copies == 1, what="the copy", timeout=60)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            return peak, (store_dir / "data.mdb").stat().st_size

    peak, size = run(scenario())
    assert size > 8 << 20
    assert peak < 2 << 20, f"{peak} bytes at the peak while receiving a copy of {size} bytes"


def test_a_stop_during_a_commit_returns_only_once_it_is_committed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    leader_store = leader_log(tmp_path / "leader" / "eventlog", 10)
    store_dir = tmp_path / "standby" / "eventlog"
    entered, release = threading.Event(), threading.Event()
    real = LogStore.append_records

    def slow(self: LogStore, records: list[bytes]) -> object:
        entered.set()
        release.wait(10)  # a slow disk
        return real(self, records)

    monkeypatch.setattr(LogStore, "append_records", slow)

    async def scenario() -> LogStore:
        async with FakeLeader(leader_store) as leader:
            follower = standby(store_dir, LogStore(store_dir), leader.address)
            async with Following(follower) as f:
                await wait_until(lambda: follower.copies == 1, what="the copy")
                leader_store.append([put("edge02", f"late{i}") for i in range(5)])
                await wait_until(entered.is_set, what="a commit under way")
                threading.Timer(0.3, release.set).start()  # the commit ends after the stop
            assert f.store is not None
            assert f.store.head_offset == 15  # committed before run() returned: the leader phase may append at once
            return f.store

    store = run(scenario())
    assert log_records(store) == log_records(leader_store)
