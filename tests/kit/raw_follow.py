"""A bare Follow stream to a manager's sync service, for driving the leader's side by hand (not the Follower).

- ``RawFollow`` / ``raw_follow(address, credentials=None)``: FollowHello, read Welcome, LogRecords,
  StoreChunks and heartbeats, send acks; the final status code and trailing metadata.
- ``hello_of(store, identity, head=None)``: the FollowHello of a standby whose store is `store` (through head).
- ``peer_credentials(pki, name, subject=None)``: channel credentials with a manager's peer certificate
  (CN=edge.k8s.io:manager:<name>, O=edge.k8s.io:managers unless `subject` says otherwise), issued once.
Tests only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from eventlog import RECORD_FORMAT, LogStore, event_offset
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc
from tests.kit.pki import Pki, issue


def peer_credentials(pki: Pki, name: str, *, subject: str | None = None) -> grpc.ChannelCredentials:
    """Credentials of a standby manager: a peer certificate of the test CA (kept in its dir under `name`)."""
    cert, key = pki.client(f"peer-{name}")
    if not cert.exists():
        issue(pki.dir, f"peer-{name}", subject or f"/CN=edge.k8s.io:manager:{name}/O=edge.k8s.io:managers",
              "extendedKeyUsage=clientAuth\n")
    return grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes(), private_key=key.read_bytes(),
                                        certificate_chain=cert.read_bytes())


def hello_of(store: LogStore, identity: str = "standby-1_0000abcd", *, head: int | None = None) -> pb.FollowHello:
    """What a standby whose store is `store` (through `head`, default its head) says first: its log_id, head
    and the hash of its head record."""
    head = store.head_offset if head is None else head
    return pb.FollowHello(identity=identity, log_id=store.log_id, head_offset=head,
                          head_hash=store.record_hash(head) or 0, record_format=RECORD_FORMAT)


@dataclass
class Copy:
    """The StoreChunks of one COPY, joined."""

    data: bytes
    head_offset: int
    size: int
    chunks: int


class RawFollow:
    """One Follow stream, read and written by hand."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.call = pb_grpc.SyncStub(channel).Follow()

    async def send(self, **kind: object) -> None:
        await self.call.write(pb.StandbyMessage(**kind))

    async def hello(self, hello: pb.FollowHello) -> pb.FollowWelcome:
        await self.send(hello=hello)
        message = await self.read()
        assert message.WhichOneof("kind") == "welcome", message
        return message.welcome

    async def ack(self, head_offset: int) -> None:
        await self.send(ack=pb.FollowAck(head_offset=head_offset))

    async def read(self, timeout: float = 20.0) -> pb.LeaderMessage:
        message = await asyncio.wait_for(self.call.read(), timeout)
        assert message is not grpc.aio.EOF, "stream ended"
        return message

    async def read_records(self, count: int, *, timeout: float = 20.0, ack: bool = False) -> list[bytes]:
        """Records of the next LogRecords until `count` arrived (heartbeats skipped); acked per message if asked."""
        records: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < count:
            message = await self.read(max(0.1, deadline - loop.time()))
            kind = message.WhichOneof("kind")
            if kind == "records":
                records.extend(message.records.records)
                if ack:
                    await self.ack(event_offset(records[-1]))
            else:
                assert kind == "heartbeat", message
        return records

    async def read_copy(self) -> Copy:
        """Every StoreChunk of a COPY, joined."""
        parts: list[bytes] = []
        while True:
            message = await self.read()
            if message.WhichOneof("kind") == "heartbeat":
                continue
            assert message.WhichOneof("kind") == "store", message
            parts.append(message.store.data)
            if message.store.last:
                return Copy(b"".join(parts), message.store.head_offset, message.store.size, len(parts))

    async def ended(self, timeout: float = 20.0) -> tuple[grpc.StatusCode, str, dict[str, str]]:
        """Read until the stream ends: (code, details, trailing metadata)."""
        try:
            while True:
                message = await asyncio.wait_for(self.call.read(), timeout)
                if message is grpc.aio.EOF:
                    break
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", {k: v for k, v in (exc.trailing_metadata() or ())}
        trailing = await self.call.trailing_metadata()
        return await self.call.code(), await self.call.details(), {k: v for k, v in (trailing or ())}


@asynccontextmanager
async def raw_follow(address: str, credentials: grpc.ChannelCredentials | None = None) -> AsyncIterator[RawFollow]:
    """A RawFollow on its own channel, cancelled at the end."""
    channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    async with channel:
        stream = RawFollow(channel)
        try:
            yield stream
        finally:
            stream.call.cancel()
