"""A minimal leader for the standby's unit tests: the Follow RPC alone, over a real LogStore, on port 0.

`FakeLeader` answers a FollowHello as the contract says (RESUME when the log_id matches, the
standby's head is not beyond the leader's and its record hash equals the leader's there;
otherwise COPY from `LogStore.copy_to`), streams records as they are appended and heartbeats,
and records the acks. Faults: `leading=False` answers "not the leader" with a hint,
`die_after_chunks` aborts a copy midway, `lie` announces a wrong size, log_id or head, `skip_records` leaves a gap, `inject` sends
records of another history.
`Following` runs a Follower for the length of an `async with`; `LostHelloChannels` stands
for gRPC losing a refusal's status to a Hello written as the call ended (INTERNAL).
The real leader side is manager/replication.py (helper HR); this only pins the client.
Tests only.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from eventlog import RECORD_FORMAT, LogStore
from manager.following import Follower
from proto import sync_pb2 as pb

SERVICE = "k8sedge.sync.v1.Sync"


class Lie(enum.Enum):
    """What a lying leader announces wrongly about a copy."""

    NONE = "none"
    SIZE = "size"
    LOG_ID = "log_id"
    HEAD = "head"


@dataclass
class FakeLeader:
    """A Follow server over `store`; `address` once started."""

    store: LogStore
    leading: bool = True
    hint: str = ""  # the leader address a non-leader names ("" : no leader known)
    heartbeat_seconds: int = 1
    batch: int = 64
    chunk_bytes: int = 16 << 10
    die_after_chunks: int | None = None
    lie: Lie = Lie.NONE
    skip_records: int = 0  # a faulty leader: records start this many offsets past the standby's head
    inject: list[bytes] = field(default_factory=list)  # records sent once, as they are, on the open stream
    acks: list[int] = field(default_factory=list)
    welcomes: list[tuple[str, str]] = field(default_factory=list)  # (mode, reason) of each Welcome sent
    hellos: list[pb.FollowHello] = field(default_factory=list)
    refused: int = 0  # streams answered "not the leader"
    peers: list[dict[str, list[bytes]]] = field(default_factory=list)  # the auth context of each stream
    credentials: grpc.ServerCredentials | None = None  # None: plaintext
    port: int = 0
    _server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, *, port: int = 0) -> FakeLeader:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Follow": grpc.stream_stream_rpc_method_handler(
                self.Follow, request_deserializer=pb.StandbyMessage.FromString,
                response_serializer=pb.LeaderMessage.SerializeToString),
        })
        self._server = grpc.aio.server(handlers=[handler])
        bind = f"127.0.0.1:{port}"
        if self.credentials is None:
            self.port = self._server.add_insecure_port(bind)
        else:
            self.port = self._server.add_secure_port(bind, self.credentials)
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    async def __aenter__(self) -> FakeLeader:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _mode(self, hello: pb.FollowHello) -> tuple[int, str]:
        head = self.store.head_offset
        if hello.log_id != self.store.log_id:
            return pb.FollowWelcome.COPY, "unknown log_id" if hello.log_id else "empty store"
        if hello.head_offset > head:
            return pb.FollowWelcome.COPY, f"head {hello.head_offset} is beyond the leader's {head}"
        if self.store.record_hash(hello.head_offset) != hello.head_hash:
            return pb.FollowWelcome.COPY, f"record {hello.head_offset} differs"
        return pb.FollowWelcome.RESUME, ""

    async def Follow(  # noqa: N802 (the generated name)
        self, requests: AsyncIterator[pb.StandbyMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LeaderMessage]:
        self.peers.append({k: list(v) for k, v in context.auth_context().items()})
        if not self.leading:
            # the Hello read first, as the real service does: a client still writing it when the call ends may
            # see gRPC's "Internal error from Core" instead of the status and its trailing metadata
            await requests.__anext__()
            self.refused += 1
            if self.hint:
                context.set_trailing_metadata((("k8s-edge-leader", self.hint),))
            where = f"the leader is at {self.hint}" if self.hint else "no leader known"
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not the leader; {where}")
            return
        first = await requests.__anext__()
        hello = first.hello
        self.hellos.append(hello)
        mode, reason = self._mode(hello)
        self.welcomes.append(("COPY" if mode == pb.FollowWelcome.COPY else "RESUME", reason))
        announced = "0" * 32 if self.lie is Lie.LOG_ID and mode == pb.FollowWelcome.COPY else self.store.log_id
        yield pb.LeaderMessage(welcome=pb.FollowWelcome(
            log_id=announced, mode=mode, head_offset=self.store.head_offset, reason=reason,
            record_format=RECORD_FORMAT, heartbeat_seconds=self.heartbeat_seconds))
        acks = asyncio.ensure_future(self._read_acks(requests))
        try:
            sent = hello.head_offset
            if mode == pb.FollowWelcome.COPY:
                with tempfile.TemporaryDirectory(dir=Path(self.store.path).parent) as tmp:
                    info = self.store.copy_to(Path(tmp) / "copy")
                    async for chunk in self._chunks(Path(tmp) / "copy" / "data.mdb", info.head_offset):
                        yield chunk
                    sent = info.head_offset
            sent += self.skip_records
            loop = asyncio.get_running_loop()
            last_beat = loop.time()
            while True:
                if self.inject:
                    injected, self.inject = self.inject, []
                    yield pb.LeaderMessage(records=pb.LogRecords(records=injected, head_offset=self.store.head_offset))
                with self.store.reader() as r:
                    records = [raw for _, raw in zip(range(self.batch), (v for _, v in r.records(after=sent)))]
                if records:
                    sent += len(records)
                    yield pb.LeaderMessage(records=pb.LogRecords(records=records, head_offset=self.store.head_offset))
                    continue
                if loop.time() - last_beat >= self.heartbeat_seconds:
                    last_beat = loop.time()
                    yield pb.LeaderMessage(heartbeat=pb.Heartbeat(head_offset=self.store.head_offset))
                await asyncio.sleep(0.02)  # the fake polls its store; the real leader is woken by appends
        finally:
            acks.cancel()

    async def _chunks(self, data: Path, head: int) -> AsyncIterator[pb.LeaderMessage]:
        total = data.stat().st_size
        size = total + (1 if self.lie is Lie.SIZE else 0)
        head = head + (1 if self.lie is Lie.HEAD else 0)
        sent = 0
        with data.open("rb") as f:  # a chunk at a time, as the real leader: tests measure the standby's memory
            for i in itertools.count():
                piece = f.read(self.chunk_bytes)
                sent += len(piece)
                if self.die_after_chunks is not None and i == self.die_after_chunks:
                    raise ConnectionAbortedError("the fake leader died mid-copy")
                last = sent >= total
                yield pb.LeaderMessage(store=pb.StoreChunk(data=piece, last=last, head_offset=head if last else 0,
                                                           size=size if last else 0))
                if last:
                    return

    async def _read_acks(self, requests: AsyncIterator[pb.StandbyMessage]) -> None:
        async for message in requests:
            if message.HasField("ack"):
                self.acks.append(message.ack.head_offset)


class Following:
    """`async with Following(follower) as f`: the follower runs meanwhile; `f.store` is what run() returned."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower
        self.stop = asyncio.Event()
        self.store: LogStore | None = None
        self._task: asyncio.Task[LogStore] | None = None

    async def __aenter__(self) -> Following:
        self._task = asyncio.ensure_future(self.follower.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self.stop.set()
        self.store = await asyncio.wait_for(self._task, 10)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


class _LostHelloCall:
    """A Follow call that ended while its Hello was written, as gRPC reports it then: INTERNAL, no metadata."""

    async def write(self, message: object) -> None:
        raise grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   "Internal error from Core")

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.INTERNAL

    async def details(self) -> str:
        return "Internal error from Core"

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    def cancel(self) -> bool:
        return False


class LostHelloChannels:
    """A Follower's channel factory whose first `lost` Follow calls lose their Hello (a manager that refused before
    reading it, the race gRPC reports as INTERNAL); later ones are real plaintext channels."""

    def __init__(self, *, lost: int) -> None:
        self.lost = lost

    def __call__(self, address: str) -> object:
        if self.lost <= 0:
            return grpc.aio.insecure_channel(address)
        self.lost -= 1
        return self

    def stream_stream(self, *args: object, **kwargs: object) -> object:
        return lambda *a, **k: _LostHelloCall()

    def unary_unary(self, *args: object, **kwargs: object) -> object:  # the stub makes one per method
        return lambda *a, **k: None

    unary_stream = stream_unary = unary_unary

    async def close(self) -> None:
        return None
