"""Hello decides: resume after applied_offset, or a snapshot (with its reason) then events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.sync_client import Report, SyncClient
from eventlog import LogStore, ReplicaStore, decode_event, digest_of
from proto import sync_pb2 as pb
from tests.kit.builders import delete, put
from tests.kit.fake_agents import raw_stream
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until


def test_resume_sends_exactly_the_later_events_of_that_node(store: LogStore) -> None:
    store.append([put("edge01", f"a{i}") for i in range(3)] + [put("edge02", "other")])  # 1..4
    store.append([put("edge02", "b"), put("edge01", "a0", rev=1), delete("edge01", "a1")])  # 5..7
    digest_at_2 = store.digest_at("edge01", 2)

    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            welcome = await stream.hello("edge01", log_id=store.log_id, applied_offset=2, digest=digest_at_2)
            assert welcome.mode == pb.Welcome.RESUME
            assert welcome.log_id == store.log_id
            assert welcome.head_offset == 7
            message = await stream.read()
            assert message.WhichOneof("kind") == "batch"
            # the bytes on the wire are the stored bytes
            assert list(message.batch.events) == store.read_node_raw("edge01", after=2)
            events = [decode_event(raw) for raw in message.batch.events]
            assert [(e.offset, e.node, e.op, e.name) for e in events] == [
                (3, "edge01", "put", "a2"), (6, "edge01", "put", "a0"), (7, "edge01", "delete", "a1"),
            ]
            # a later append for another node is never sent; one for edge01 is, without polling delay
            store.append([put("edge02", "c")])
            s.notifier.notify(["edge02"])
            store.append([put("edge01", "d")])
            s.notifier.notify(["edge01"])
            message = await stream.read(timeout=5)
            assert message.WhichOneof("kind") == "batch"
            assert message.batch.head_offset == 9
            assert [e for e in message.batch.events] == store.read_node_raw("edge01", after=7)

    run(scenario())


def test_unknown_log_id_empty_replica_and_compacted_offset_each_get_a_snapshot(store: LogStore) -> None:
    store.append([put("edge01", f"p{i}") for i in range(4)] + [put("edge02", "x")])  # 1..5
    store.append([delete("edge01", "p0")])  # 6
    store.compact(keep_last=1)  # drops 1..5: edge01 compacted through 4
    store.append([put("edge01", "late")])  # 7

    async def snapshot_then_events(address: str, reason: str, **hello: object) -> None:
        async with raw_stream(address) as stream:
            welcome = await stream.hello("edge01", **hello)
            assert welcome.mode == pb.Welcome.SNAPSHOT
            assert reason in welcome.reason
            head = store.node_state("edge01").head_offset
            assert welcome.snapshot_offset == head
            last, entries = await stream.read_snapshot()
            assert last.offset == head and last.pod_count == 4
            assert {p.name for p in entries} == {"p1", "p2", "p3", "late"}
            assert digest_of(entries) == last.digest == store.node_state("edge01").digest
            await stream.ack(head, last.digest)
            store.append([put("edge01", "after")])  # events > S follow the snapshot
            s.notifier.notify(["edge01"])
            (event,) = await stream.read_events(1)
            assert (event.offset, event.name) == (head + 1, "after")
            store.append([delete("edge01", "after")])  # back to the same state for the next case

    async def scenario() -> None:
        nonlocal s
        async with serving(store) as s:
            await snapshot_then_events(s.address, "unknown log_id", log_id="f" * 32, applied_offset=3, digest=1)
            await snapshot_then_events(s.address, "empty replica")
            await snapshot_then_events(s.address, "compacted", log_id=store.log_id, applied_offset=2)
            await snapshot_then_events(s.address, "beyond", log_id=store.log_id, applied_offset=10_000)
            reasons = [c["reason"] for c in s.observer.of("snapshot_sent", "edge01")]
            assert len(reasons) == 4

    s = None
    run(scenario())


def test_a_node_the_log_never_saw_gets_an_empty_snapshot_then_its_first_events(store: LogStore) -> None:
    store.append([put("edge02", "x")])

    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            welcome = await stream.hello("edge09")
            assert (welcome.mode, welcome.snapshot_offset, welcome.head_offset) == (pb.Welcome.SNAPSHOT, 0, 0)
            last, entries = await stream.read_snapshot()
            assert (last.offset, last.digest, last.pod_count, entries) == (0, 0, 0, [])
            store.append([put("edge09", "first")])
            s.notifier.notify(["edge09"])
            (event,) = await stream.read_events(1)
            assert (event.offset, event.node) == (2, "edge09")

    run(scenario())


def test_snapshot_replaces_the_replica_so_removed_pods_are_gone(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", f"p{i}") for i in range(5)])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def reconciled() -> Report:
        return Report(manifests_ok=True, managed_manifests=replica.state().pod_count)

    async def scenario() -> None:
        async with serving(store) as s:
            client = SyncClient(node="edge01", addresses=[s.address], replica=replica, after_apply=reconciled,
                                backoff_initial=0.05, backoff_max=0.2)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.applied_offset == 5, what="first snapshot")
                assert set(n for _, n in replica.pods()) == {f"p{i}" for i in range(5)}
            finally:
                task.cancel()
        # while the agent is away, three pods go and the log forgets how
        store.append([delete("edge01", "p0"), delete("edge01", "p1"), delete("edge01", "p2"), put("edge01", "new")])
        store.append([put("edge02", "filler")])
        store.compact(keep_last=1)
        async with serving(store) as s:
            client = SyncClient(node="edge01", addresses=[s.address], replica=replica, after_apply=reconciled,
                                backoff_initial=0.05, backoff_max=0.2)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.applied_offset == 9, what="second snapshot")
                assert client.snapshots_installed == 1
                assert set(n for _, n in replica.pods()) == {"p3", "p4", "new"}
                assert replica.state().digest == store.node_state("edge01").digest
                sent = s.observer.of("snapshot_sent", "edge01")[0]
                assert "compacted" in sent["reason"] and sent["label"] == "compacted"
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_compaction_under_a_lagging_stream_turns_into_a_snapshot(store: LogStore) -> None:
    from manager.sync_service import SyncSettings

    store.append([put("edge01", f"p{i % 20}", rev=i) for i in range(200)])  # 1..200

    async def scenario() -> None:
        async with serving(store, settings=SyncSettings(window=64, batch_size=16, heartbeat_seconds=5.0)) as s:
            async with raw_stream(s.address) as stream:
                welcome = await stream.hello("edge01", log_id=store.log_id, applied_offset=0, digest=0)
                assert welcome.mode == pb.Welcome.RESUME
                await stream.read_events(64)  # the window is full
                store.append([put("edge02", "filler")])
                store.compact(keep_last=1)  # everything edge01 still needs is gone
                await stream.ack(64, 0)  # digest unknown after compaction: not checked
                started = time.monotonic()
                last, entries = await stream.read_snapshot()
                assert time.monotonic() - started < 3  # at once, not at the next heartbeat (5 s)
                assert last.offset == 200 and len(entries) == 20
                assert last.digest == store.node_state("edge01").digest
                await stream.ack(200, last.digest)
                assert (await stream.read()).WhichOneof("kind") == "heartbeat"
                assert "compacted" in s.observer.of("snapshot_sent")[0]["reason"]

    run(scenario())
