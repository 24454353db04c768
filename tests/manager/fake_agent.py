"""A minimal raw gRPC agent for the manager's tests (not the real agent).

It opens a stream with an empty replica, takes the snapshot or batches, and acknowledges each
with the digest the manager's own store has at that offset (read-only), as an in-sync agent
would. It counts heartbeats so tests can show that heartbeats cost the apiserver nothing.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import grpc

from eventlog import RECORD_FORMAT, LogStore, event_offset
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc


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
