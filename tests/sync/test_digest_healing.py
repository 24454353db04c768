"""A replica whose digest differs from the log's at the same offset gets a snapshot: divergence heals itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.sync_client import SyncClient
from eventlog import LogStore, PodEntry, ReplicaStore, Snapshot, digest_of
from proto import sync_pb2 as pb
from tests.kit.builders import pod_manifest, put
from tests.kit.fake_agents import raw_stream
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until


def _corrupt(replica: ReplicaStore) -> None:
    """Make the replica hold a pod the log never had, at the same log_id and offset."""
    cursor = replica.cursor()
    pods = (*replica.pods().values(), PodEntry("default", "intruder", cursor.applied_offset, pod_manifest("default", "intruder")))
    replica.install_snapshot(Snapshot(cursor.log_id, replica.node, cursor.applied_offset, digest_of(pods), pods))


async def _nothing() -> None:
    return None


def test_diverged_replica_at_hello_gets_a_snapshot(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", f"p{i}") for i in range(3)])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")
    replica.install_snapshot(store.snapshot("edge01"))
    _corrupt(replica)
    assert replica.state().digest != store.node_state("edge01").digest

    async def scenario() -> None:
        async with serving(store) as s:
            client = SyncClient(node="edge01", addresses=[s.address], replica=replica, after_apply=_nothing)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.snapshots_installed == 1, what="healing snapshot")
                assert s.observer.of("snapshot_sent", "edge01") == [{"reason": "digest mismatch", "label": "digest"}]
                assert replica.state().digest == store.node_state("edge01").digest
                assert ("default", "intruder") not in replica.pods()
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_divergence_seen_in_an_ack_heals_within_the_stream(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", f"p{i}") for i in range(3)])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def scenario() -> None:
        async with serving(store) as s:
            client = SyncClient(node="edge01", addresses=[s.address], replica=replica, after_apply=_nothing)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.snapshots_installed == 1 and client.applied_offset == 3,
                                 what="first snapshot")
                await asyncio.to_thread(_corrupt, replica)  # behind the client's back, mid-stream
                events = store.append([put("edge01", "p9")])
                s.notifier.notify(["edge01"])
                await wait_until(lambda: client.snapshots_installed == 2, what="healing snapshot")
                # the diverged ack names the same offset: wait for the snapshot's own ack (the log's digest)
                await wait_until(lambda: s.observer.of("acknowledged")[-1] == {
                    "applied_offset": events[-1].offset, "digest": store.node_state("edge01").digest},
                    what="ack of the snapshot")
                assert client.reconnects == 0  # healed in the same stream
                assert [c["reason"] for c in s.observer.of("snapshot_sent")] == ["empty replica", "digest mismatch"]
                assert replica.state().digest == store.node_state("edge01").digest
                assert s.observer.of("acknowledged")[-1]["digest"] == store.node_state("edge01").digest
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_stale_acks_before_the_healing_snapshot_do_not_trigger_another(store: LogStore) -> None:
    store.append([put("edge01", f"p{i}") for i in range(4)])  # 1..4

    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            await stream.hello("edge01", log_id=store.log_id, applied_offset=0, digest=0)
            await stream.read_events(4)
            await stream.ack(1, 12345)  # wrong digest
            last, entries = await stream.read_snapshot()
            assert last.offset == 4 and len(entries) == 4
            await stream.ack(2, 999)  # still working through what preceded the snapshot
            await stream.ack(4, last.digest)
            message = await stream.read()
            assert message.WhichOneof("kind") == "heartbeat"
            assert [c["reason"] for c in s.observer.of("snapshot_sent")] == ["digest mismatch"]

    run(scenario())


def test_wrong_digest_after_the_snapshot_triggers_another(store: LogStore) -> None:
    store.append([put("edge01", "p")])

    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            welcome = await stream.hello("edge01")
            assert welcome.mode == pb.Welcome.SNAPSHOT
            last, _ = await stream.read_snapshot()
            await stream.ack(last.offset, last.digest ^ 1)
            again, _ = await stream.read_snapshot()
            assert again.offset == last.offset
            assert [c["reason"] for c in s.observer.of("snapshot_sent")] == ["empty replica", "digest mismatch"]

    run(scenario())


def test_a_stale_ack_of_the_snapshot_offset_itself_does_not_trigger_another(store: LogStore) -> None:
    store.append([put("edge01", f"p{i}") for i in range(4)])  # 1..4: the last event sent is the head

    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            await stream.hello("edge01", log_id=store.log_id, applied_offset=0, digest=0)
            await stream.read_events(4)
            await stream.ack(2, 12345)  # wrong digest: a snapshot at S = 4 follows
            last, _ = await stream.read_snapshot()
            assert last.offset == 4
            await stream.ack(4, 999)  # the batch up to 4, applied before the snapshot arrived: stale
            await stream.ack(4, last.digest)  # the snapshot's own ack
            message = await stream.read()
            assert message.WhichOneof("kind") == "heartbeat"
            assert [c["reason"] for c in s.observer.of("snapshot_sent")] == ["digest mismatch"]
            await stream.ack(4, 777)  # from now on a wrong digest at S is a divergence again
            again, _ = await stream.read_snapshot()
            assert again.offset == 4

    run(scenario())
