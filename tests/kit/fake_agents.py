"""Agents that are not the real agent process, for tests of the manager and the sync service.

- ``FakeAgent``: a minimal raw gRPC agent on a thread. It opens a stream with an empty replica,
  takes the snapshot or batches, and acknowledges each with the digest the manager's own store
  has at that offset (read-only), as an in-sync agent would; it counts heartbeats so tests can
  show that heartbeats cost the apiserver nothing.
- ``RawStream`` / ``raw_stream``: a bare stream for driving the protocol by hand (asyncio).
- ``legit_agent_syncs``: the real SyncClient in-process, checked to end equal to the log's view.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from agent.sync_client import ClientTls, SyncClient
from eventlog import RECORD_FORMAT, LogStore, ReplicaStore, decode_entry, decode_event, event_offset
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc
from tests.kit.waits import wait_until


class FakeAgent:
    """One agent stream for `node` against 127.0.0.1:port."""

    def __init__(self, port: int, node: str, data_dir: Path, *,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.node = node
        self.store_dir = Path(data_dir) / "eventlog"
        self.acked = 0
        self.heartbeats = 0
        self.error: grpc.RpcError | None = None
        self._q: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self._q.put(pb.AgentMessage(hello=pb.Hello(node=node, record_format=RECORD_FORMAT, agent_version="test")))
        # its own connection, as a separate agent process has (grpc shares them between channels by default)
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channel = (grpc.insecure_channel(f"127.0.0.1:{port}", options=options) if credentials is None
                         else grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options))
        self._responses = pb_grpc.SyncStub(self._channel).Stream(iter(self._q.get, None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _digest(self, offset: int) -> int:
        with LogStore(self.store_dir, readonly=True) as s:
            d = s.digest_at(self.node, offset)
        assert d is not None
        return d

    def _ack(self, offset: int, digest: int) -> None:
        self._q.put(pb.AgentMessage(ack=pb.Ack(applied_offset=offset, digest=digest)))
        self.acked = offset

    def report(self, *, ok: bool, message: str = "", managed: int = 0) -> None:
        """Send an AgentReport."""
        self._q.put(pb.AgentMessage(report=pb.AgentReport(manifests_ok=ok, message=message,
                                                          managed_manifests=managed)))

    def _run(self) -> None:
        try:
            for msg in self._responses:
                kind = msg.WhichOneof("kind")
                if kind == "snapshot" and msg.snapshot.last:
                    self._ack(msg.snapshot.offset, msg.snapshot.digest)
                elif kind == "batch" and msg.batch.events:
                    off = event_offset(msg.batch.events[-1])
                    self._ack(off, self._digest(off))
                elif kind == "heartbeat":
                    self.heartbeats += 1
        except grpc.RpcError as exc:
            self.error = exc

    def close(self) -> None:
        """End the stream (the manager sees the agent disconnect)."""
        self._q.put(None)
        self._responses.cancel()
        self._channel.close()
        self._thread.join(10)


class RawStream:
    """A bare gRPC stream to the sync service, for driving the protocol by hand (not SyncClient)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.call = pb_grpc.SyncStub(channel).Stream()

    async def send(self, **kind: object) -> None:
        await self.call.write(pb.AgentMessage(**kind))

    async def hello(self, node: str, *, log_id: str = "", applied_offset: int = 0, digest: int = 0,
                    record_format: int = RECORD_FORMAT) -> pb.Welcome:
        await self.send(hello=pb.Hello(node=node, log_id=log_id, applied_offset=applied_offset, digest=digest,
                                       record_format=record_format, agent_version="test"))
        message = await self.read()
        assert message.WhichOneof("kind") == "welcome", message
        return message.welcome

    async def ack(self, applied_offset: int, digest: int = 0) -> None:
        await self.send(ack=pb.Ack(applied_offset=applied_offset, digest=digest))

    async def read(self, timeout: float = 20.0) -> pb.ManagerMessage:
        message = await asyncio.wait_for(self.call.read(), timeout)
        assert message is not grpc.aio.EOF, "stream ended"
        return message

    async def read_snapshot(self) -> tuple[pb.SnapshotChunk, list]:
        """All chunks of one snapshot: (last chunk, decoded entries)."""
        entries = []
        while True:
            message = await self.read()
            if message.WhichOneof("kind") == "heartbeat" and not entries:
                continue  # an idle stream may have a heartbeat due before the snapshot
            assert message.WhichOneof("kind") == "snapshot", message
            entries.extend(decode_entry(e) for e in message.snapshot.entries)
            if message.snapshot.last:
                return message.snapshot, entries

    async def read_events(self, count: int, *, timeout: float = 20.0) -> list:
        """Decoded events of the next batches until `count` arrived (heartbeats skipped)."""
        events = []
        deadline = time.monotonic() + timeout
        while len(events) < count:
            message = await self.read(max(0.1, deadline - time.monotonic()))
            kind = message.WhichOneof("kind")
            if kind == "batch":
                events.extend(decode_event(e) for e in message.batch.events)
            else:
                assert kind == "heartbeat", message
        return events

    async def status(self, timeout: float = 20.0) -> grpc.StatusCode:
        """Read until the stream ends; the final status code."""
        try:
            while True:
                message = await asyncio.wait_for(self.call.read(), timeout)
                if message is grpc.aio.EOF:
                    break
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return await self.call.code()


@asynccontextmanager
async def raw_stream(address: str, credentials: grpc.ChannelCredentials | None = None) -> AsyncIterator[RawStream]:
    channel = (
        grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    )
    async with channel:
        stream = RawStream(channel)
        try:
            yield stream
        finally:
            stream.call.cancel()


async def legit_agent_syncs(address: str, store: LogStore, node: str, replica_dir: Path, *,
                            tls: ClientTls | None = None, timeout: float = 60.0) -> SyncClient:
    """A well-behaved agent of `node` syncs; its replica then equals the log's view exactly (pods and digest)."""
    replica = ReplicaStore(replica_dir, node=node)

    async def reconcile() -> None:
        return None

    agent = SyncClient(node=node, addresses=[address], replica=replica, after_apply=reconcile, tls=tls,
                       backoff_initial=0.05, backoff_max=0.5, connect_timeout=5.0)
    task = asyncio.create_task(agent.run())
    try:
        head = store.node_state(node).head_offset
        await wait_until(lambda: agent.applied_offset == head, timeout=timeout, what=f"{node} synced to {head}")
        expected = {(p.namespace, p.name): p.manifest for p in store.pods(node).values()}
        got = {(p.namespace, p.name): p.manifest for p in replica.pods().values()}
        assert got == expected
        assert replica.state().digest == store.node_state(node).digest
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        replica.close()
    return agent
