"""SyncClient end to end: apply, reconcile, acknowledge, report, reconnect, heartbeats, dead streams."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc

from agent.sync_client import Report, SyncClient
from eventlog import LogStore, ReplicaStore
from manager.notify import LogNotifier
from manager.sync_service import SyncSettings
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc
from tests.kit.builders import delete, put
from tests.kit.fake_agents import raw_stream
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until


def _client(address: str | list[str], replica: ReplicaStore, after_apply, **kw) -> SyncClient:  # noqa: ANN001
    addresses = [address] if isinstance(address, str) else address
    return SyncClient(node=replica.node, addresses=addresses, replica=replica, after_apply=after_apply,
                      backoff_initial=kw.pop("backoff_initial", 0.05), backoff_max=kw.pop("backoff_max", 0.3), **kw)


def test_applies_then_reconciles_then_acks_and_reports_changes(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", f"p{i}") for i in range(3)] + [put("edge02", "x")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")
    seen: list[tuple[int, int]] = []  # (replica applied_offset, newest ack the manager had) at each reconcile

    async def scenario() -> None:
        async with serving(store) as s:
            async def reconcile() -> Report:
                acks = s.observer.of("acknowledged", "edge01")
                seen.append((replica.cursor().applied_offset, acks[-1]["applied_offset"] if acks else -1))
                return Report(manifests_ok=True, managed_manifests=replica.state().pod_count)

            client = _client(s.address, replica, reconcile)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.applied_offset == 3, what="snapshot")
                store.append([put("edge01", "p3")])
                s.notifier.notify(["edge01"])
                await wait_until(lambda: client.applied_offset == 5, what="event 5")
                store.append([put("edge01", "p3", rev=1)])  # same pod count: the report does not change
                s.notifier.notify(["edge01"])
                await wait_until(lambda: s.observer.of("acknowledged", "edge01")[-1:] and
                                 s.observer.of("acknowledged", "edge01")[-1]["applied_offset"] == 6, what="ack 6")
                assert (client.snapshots_installed, client.batches_applied, client.events_applied) == (1, 2, 2)
                assert client.connected and client.head_offset == 6 and client.reconnects == 0
                assert replica.state().digest == store.node_state("edge01").digest
                # each reconcile saw the replica already committed and no ack for it yet
                assert seen == [(3, -1), (5, 3), (6, 5)]
                acks = s.observer.of("acknowledged", "edge01")
                assert [(a["applied_offset"], a["digest"]) for a in acks] == [
                    (o, store.digest_at("edge01", o)) for o in (3, 5, 6)
                ]
                assert s.observer.of("reported", "edge01") == [
                    {"manifests_ok": True, "message": "", "managed_manifests": 3},
                    {"manifests_ok": True, "message": "", "managed_manifests": 4},
                ]
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_a_failing_reconcile_is_still_acknowledged_and_reported(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", "p")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def broken() -> Report:
        raise PermissionError("/etc/kubernetes/manifests: read-only file system")

    async def scenario() -> None:
        async with serving(store) as s:
            client = _client(s.address, replica, broken)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: s.observer.of("reported", "edge01"), what="report")
                assert s.observer.of("acknowledged", "edge01")[0]["applied_offset"] == 1
                report = s.observer.of("reported", "edge01")[0]
                assert report["manifests_ok"] is False and "read-only" in report["message"]
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_reconnects_after_a_manager_restart_and_resumes_without_snapshot(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", f"p{i}") for i in range(3)])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def reconcile() -> None:
        return None

    async def scenario() -> None:
        async with serving(store) as s:
            port = s.port
            client = _client(s.address, replica, reconcile)
            task = asyncio.create_task(client.run())
            await wait_until(lambda: client.applied_offset == 3, what="snapshot")
            await s.server.stop(1.0)  # graceful stop: the stream ends with UNAVAILABLE
            await wait_until(lambda: not client.connected, what="disconnect")
        try:
            assert "UNAVAILABLE" in client.last_error
            # changes while the manager is down
            store.append([delete("edge01", "p0"), put("edge01", "p9")])
            async with serving(store, port=port) as s:
                await wait_until(lambda: client.applied_offset == 5, timeout=30, what="resume after restart")
                assert client.snapshots_installed == 1  # same log_id: resumed, no snapshot
                assert client.reconnects >= 1
                assert not s.observer.of("snapshot_sent")
                assert {n for _, n in replica.pods()} == {"p1", "p2", "p9"}
                assert replica.state().digest == store.node_state("edge01").digest
        finally:
            task.cancel()

    run(scenario())
    replica.close()


def test_tries_the_addresses_in_turn(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", "p")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"

    async def reconcile() -> None:
        return None

    async def scenario() -> None:
        async with serving(store) as s:
            client = _client([dead, s.address], replica, reconcile, connect_timeout=1.0)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.applied_offset == 1, what="sync via the second address")
                assert client.reconnects >= 1 and client.address == s.address
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_heartbeats_carry_the_head_and_appends_wake_streams_without_polling(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", "p")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def reconcile() -> None:
        return None

    async def scenario() -> None:
        async with serving(store) as s:
            client = _client(s.address, replica, reconcile)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.heartbeats_received >= 2, what="heartbeats")
                assert client.head_offset == client.applied_offset == 1
            finally:
                task.cancel()
        async with serving(store, settings=SyncSettings(heartbeat_seconds=3.0)) as s:
            async with raw_stream(s.address) as stream:
                await stream.hello("edge01", log_id=store.log_id, applied_offset=1, digest=store.digest_at("edge01", 1))
                # appended but not notified: nothing is sent until the heartbeat timer, which names the new head
                store.append([put("edge01", "q")])
                message = await stream.read()
                assert message.WhichOneof("kind") == "heartbeat" and message.heartbeat.head_offset == 2
                (event,) = await stream.read_events(1)
                assert event.offset == 2
                # notify_threadsafe from another thread (the recorder may append off the loop)
                def append_and_notify() -> None:
                    store.append([put("edge01", "r")])
                    s.notifier.notify_threadsafe(["edge01"])
                await asyncio.to_thread(append_and_notify)
                message = await stream.read(timeout=2.5)  # before the next heartbeat is due
                assert message.WhichOneof("kind") == "batch" and message.batch.head_offset == 3

    run(scenario())
    replica.close()


def test_a_silent_stream_is_dropped_after_three_heartbeats(tmp_path: Path) -> None:
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    class Mute(pb_grpc.SyncServicer):
        """Welcomes, then never says anything again (a black hole above TCP)."""

        async def Stream(self, request_iterator, context):  # noqa: ANN001, N802
            await anext(request_iterator)
            yield pb.ManagerMessage(welcome=pb.Welcome(log_id="x", mode=pb.Welcome.RESUME, record_format=1,
                                                       heartbeat_seconds=1))
            await asyncio.sleep(3600)

    async def reconcile() -> None:
        return None

    async def scenario() -> None:
        server = grpc.aio.server()
        pb_grpc.add_SyncServicer_to_server(Mute(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = _client(f"127.0.0.1:{port}", replica, reconcile)
        task = asyncio.create_task(client.run())
        try:
            await wait_until(lambda: client.connected, what="welcome")
            await wait_until(lambda: client.reconnects >= 1, timeout=10, what="silence detected")
            assert "nothing from the manager for 3s" in client.last_error
        finally:
            task.cancel()
            await server.stop(0)

    run(scenario())
    replica.close()


def test_notifier_without_streams_is_a_no_op() -> None:
    notifier = LogNotifier()
    notifier.notify(["edge01"])
    notifier.notify_threadsafe(["edge01"])
    assert notifier.subscribers("edge01") == 0


def test_timer_reports_are_sent_and_the_latest_report_reaches_a_new_stream(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", "p")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def reconcile() -> Report:
        return Report(manifests_ok=True, managed_manifests=1)

    async def scenario() -> None:
        async with serving(store) as s:
            port = s.port
            client = _client(s.address, replica, reconcile)
            task = asyncio.create_task(client.run())
            await wait_until(lambda: s.observer.of("reported"), what="first report")
            client.report(Report(manifests_ok=False, message="disk full", managed_manifests=1))
            await wait_until(lambda: len(s.observer.of("reported")) == 2, what="timer report")
            client.report(Report(manifests_ok=False, message="disk full", managed_manifests=1))  # unchanged: not sent
            assert s.observer.of("reported")[-1]["message"] == "disk full"
        try:
            async with serving(store, port=port) as s:  # a restarted manager with nothing new to send
                await wait_until(lambda: s.observer.of("reported"), timeout=30, what="report on the new stream")
                assert s.observer.of("reported") == [
                    {"manifests_ok": False, "message": "disk full", "managed_manifests": 1}
                ]
                assert not s.observer.of("snapshot_sent")
        finally:
            task.cancel()

    run(scenario())
    replica.close()


def test_catching_up_coalesces_batches_and_the_head_ack_follows_a_reconcile(store: LogStore, tmp_path: Path) -> None:
    replica = ReplicaStore(tmp_path / "replica", node="edge01")
    reconciles: list[int] = []  # replica applied_offset at each reconcile

    async def slow_reconcile() -> None:
        reconciles.append(replica.cursor().applied_offset)
        await asyncio.sleep(0.2)  # a manifest folder on a slow disk
        return None

    async def scenario() -> None:
        # a window well below the 5,000 events, so they come as several coalesced transactions
        async with serving(store, settings=SyncSettings(window=1024)) as s:
            client = _client(s.address, replica, slow_reconcile)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.snapshots_installed == 1, what="empty snapshot")
                for k in range(0, 5000, 500):
                    store.append([put("edge01", f"p{i % 50}", rev=i) for i in range(k, k + 500)])
                s.notifier.notify(["edge01"])
                await wait_until(lambda: s.observer.of("acknowledged")[-1:] and
                                 s.observer.of("acknowledged")[-1]["applied_offset"] == 5000, what="ack of the head")
                await wait_until(lambda: reconciles[-1] == 5000, what="reconcile of the head")
                assert client.events_applied == 5000
                assert client.batches_applied < 5000 // 256  # coalesced, not one transaction per batch
                assert len(reconciles) < client.batches_applied + 1  # intermediate reconciles deferred
                assert replica.state().digest == store.node_state("edge01").digest
                acks = [a["applied_offset"] for a in s.observer.of("acknowledged")]
                assert acks == sorted(acks)
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_a_stream_lost_mid_catch_up_reconciles_what_was_committed(store: LogStore, tmp_path: Path) -> None:
    replica = ReplicaStore(tmp_path / "replica", node="edge01")
    reconciles: list[int] = []  # replica applied_offset at each reconcile

    async def reconcile() -> None:
        reconciles.append(replica.cursor().applied_offset)
        return None

    async def scenario() -> None:
        async with serving(store, settings=SyncSettings(window=256, heartbeat_seconds=1)) as s:
            client = _client(s.address, replica, reconcile, backoff_initial=5.0, backoff_max=5.0)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.snapshots_installed == 1, what="empty snapshot")
                for k in range(0, 20000, 500):
                    store.append([put("edge01", f"p{i % 50}", rev=i) for i in range(k, k + 500)])
                s.notifier.notify(["edge01"])
                await wait_until(lambda: client._deferred_since is not None, what="a deferred reconcile")
                await s.server.stop(0)  # the manager goes away mid catch-up
                await wait_until(lambda: not client.connected, what="disconnect")
                committed = replica.cursor().applied_offset
                assert 0 < committed < 20000, "the stream should end while the agent is behind the head"
                # the files follow the committed replica at once, not at the next resync tick
                await wait_until(lambda: reconciles and reconciles[-1] == committed, timeout=2,
                                 what="a reconcile of the committed offset")
            finally:
                task.cancel()

    run(scenario())
    replica.close()
