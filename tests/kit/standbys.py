"""A fake standby manager for agent tests: a real gRPC sync server whose every Stream is "not the leader".

- ``FakeStandby(leader=...)``: a context manager, a server on 127.0.0.1:<port 0> that aborts each
  Stream with UNAVAILABLE "not the leader; the leader is at <leader>" (or "...; no leader known")
  and the trailing metadata k8s-edge-leader=<leader>, as proto/sync.proto says a manager that does
  not lead answers; it records when each attempt arrived. A thread-pool (not asyncio) server: it
  serves in-process async tests and agent processes alike, on no event loop of the test's.
Tests only; stands in for manager.sync_service's leadership check on the agent's side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc

LEADER_METADATA_KEY = "k8s-edge-leader"


class FakeStandby(pb_grpc.SyncServicer):
    """A manager that does not lead: every Stream is refused, naming `leader` (None: no leader known)."""

    def __init__(self, *, leader: str | None) -> None:
        self.leader = leader
        self._lock = threading.Lock()
        self._attempts: list[float] = []  # time.monotonic() of each Stream call
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        pb_grpc.add_SyncServicer_to_server(self, self._server)

    def __enter__(self) -> FakeStandby:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(0).wait(10)

    @property
    def attempts(self) -> list[float]:
        """When each Stream arrived (time.monotonic())."""
        with self._lock:
            return list(self._attempts)

    def Stream(self, request_iterator: Iterator[pb.AgentMessage],  # noqa: N802 (the generated name)
               context: grpc.ServicerContext) -> Iterator[pb.ManagerMessage]:
        with self._lock:
            self._attempts.append(time.monotonic())
        next(request_iterator, None)  # the Hello: aborting before it arrives races the agent's write
        if self.leader is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader; no leader known")
        context.set_trailing_metadata(((LEADER_METADATA_KEY, self.leader),))
        context.abort(grpc.StatusCode.UNAVAILABLE, f"not the leader; the leader is at {self.leader}")
        yield pb.ManagerMessage()  # never reached: a streaming handler is a generator
