"""In-process sync servers for tests: manager.sync_service on a real port, with an observer that records.

- ``serving(store, ...)``: an async context manager, a server on port 0 for one async scenario; with
  ``replicate=True`` a leader with a high-water mark (``Served.mark``) that serves Follow, with
  ``leadership=Leader(...)`` one a test can depose; ``Served.append`` appends and wakes as the recorder does.
- ``LogServer``: a server on its own event loop in a thread, restartable on a fixed port, over a
  LogStore the test appends to; the agents under test are real processes connecting to it, and
  stopping and starting it stands in for a manager that goes down and comes back.
- ``RecordingObserver``: every observer call, in order.
- ``Leader``: a Leadership a test switches (leading or not, the leader's address).
Tests only (tests may import both manager and agent).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from eventlog import Appended, Change, Event, LogStore, SnapshotCause
from manager.sync_service import (
    FollowSettings,
    HighWaterMark,
    LogNotifier,
    NullObserver,
    ServerTls,
    SyncServer,
    SyncSettings,
    create_server,
)
from tests.kit.processes import free_port

FAST = SyncSettings(heartbeat_seconds=1.0)


class RecordingObserver(NullObserver):
    """Remembers every observer call, in order, as the manager's status writer would see them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, object]]] = []

    def connected(self, node: str, *, peer: str) -> None:
        self.calls.append(("connected", node, {"peer": peer}))

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        self.calls.append(("acknowledged", node, {"applied_offset": applied_offset, "digest": digest}))

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        self.calls.append(
            ("reported", node, {"manifests_ok": manifests_ok, "message": message, "managed_manifests": managed_manifests})
        )

    def disconnected(self, node: str) -> None:
        self.calls.append(("disconnected", node, {}))

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None:
        self.calls.append(("snapshot_sent", node, {"reason": cause.text, "label": cause.reason.value}))

    def of(self, kind: str, node: str | None = None) -> list[dict[str, object]]:
        """Arguments of the calls of one kind (for one node)."""
        return [kw for k, n, kw in self.calls if k == kind and (node is None or n == node)]

    @property
    def reports(self) -> list[tuple[str, bool, str, int]]:
        """(node, manifests_ok, message, managed_manifests) of each report."""
        return [(n, kw["manifests_ok"], kw["message"], kw["managed_manifests"])
                for k, n, kw in self.calls if k == "reported"]  # type: ignore[misc]

    @property
    def acks(self) -> list[tuple[str, int]]:
        """(node, applied_offset) of each acknowledgement."""
        return [(n, kw["applied_offset"]) for k, n, kw in self.calls if k == "acknowledged"]  # type: ignore[misc]

    @property
    def snapshots(self) -> list[tuple[str, str]]:
        """(node, reason in words) of each snapshot sent."""
        return [(n, kw["reason"]) for k, n, kw in self.calls if k == "snapshot_sent"]  # type: ignore[misc]


@dataclass
class Leader:
    """A Leadership a test switches: this manager leads, or another at `address` does ("" when none is known)."""

    leads: bool = True
    address: str = ""

    def leading(self) -> bool:
        return self.leads

    def leader_address(self) -> str:
        return self.address


@dataclass
class Served:
    """A running sync server."""

    built: SyncServer  # the gRPC server, its port, stream table and TLS files
    notifier: LogNotifier
    observer: RecordingObserver
    store: LogStore
    mark: HighWaterMark | None = None  # with replicate=True: the high-water mark agents are served through

    def append(self, changes: Iterable[Change]) -> Appended:
        """Append on the loop thread and wake what the recorder would (the mark, else the notifier)."""
        appended = self.store.append(changes)
        if appended:
            if self.mark is not None:
                self.mark.appended(appended.head_offset, appended.nodes)
            else:
                self.notifier.notify(appended.nodes)
        return appended

    @property
    def server(self) -> grpc.aio.Server:
        return self.built.grpc_server

    @property
    def port(self) -> int:
        return self.built.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(
    store: LogStore,
    *,
    settings: SyncSettings = FAST,
    tls: ServerTls | None = None,
    port: int = 0,
    notifier: LogNotifier | None = None,
    observer: RecordingObserver | None = None,
    leadership: Leader | None = None,
    replicate: bool = False,
    standby_timeout: float = 10.0,
    follow_settings: FollowSettings = FollowSettings(),
) -> AsyncIterator[Served]:
    """Start a real sync server on 127.0.0.1 and stop it afterwards (replicate: a leader with a high-water mark)."""
    notifier = notifier or LogNotifier()
    observer = observer or RecordingObserver()
    mark = HighWaterMark(store=store, notifier=notifier, standby_timeout=standby_timeout) if replicate else None
    built = create_server(
        store=store, notifier=notifier, observer=observer, address=f"127.0.0.1:{port}", tls=tls, settings=settings,
        leadership=leadership, replication=mark, follow_settings=follow_settings,
    )
    await built.grpc_server.start()
    try:
        yield Served(built, notifier, observer, store, mark)
    finally:
        await built.grpc_server.stop(0)
        if mark is not None:
            mark.close()


class LogServer:
    """manager.sync_service.create_server over a LogStore, restartable on a fixed port."""

    def __init__(self, path: Path, *, port: int | None = None, heartbeat_seconds: float = 1.0,
                 tls: ServerTls | None = None) -> None:
        self.tls = tls
        self.path = path
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.store = LogStore(path)
        self.notifier = LogNotifier()
        self.settings = SyncSettings(heartbeat_seconds=heartbeat_seconds)
        self.observer = RecordingObserver()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> LogServer:
        """Serve on self.port (the same port across restarts)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="test-sync-server", daemon=True)
        self._thread.start()

        async def boot():
            built = create_server(store=self.store, notifier=self.notifier, observer=self.observer,
                                  address=self.address, tls=self.tls, settings=self.settings)
            await built.grpc_server.start()
            return built.grpc_server

        self._server = asyncio.run_coroutine_threadsafe(boot(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        """Stop serving (streams end with UNAVAILABLE), as a manager that goes down."""
        if self._server is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=30)
        self._loop.close()
        self._server = self._loop = self._thread = None
        self.notifier = LogNotifier()

    def append(self, changes: Iterable[Change]) -> list[Event]:
        """Append to the log and wake the streams of the nodes concerned, as the recorder does."""
        events = self.store.append(changes)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.notifier.notify, tuple({e.node for e in events}))
        return events

    def desired(self, node: str) -> dict[tuple[str, str], bytes]:
        """The node's pods in the log's view: what its folder must hold."""
        return {k: p.manifest for k, p in self.store.pods(node).items()}

    def head(self, node: str) -> int:
        """The node's head offset."""
        st = self.store.node_state(node)
        return st.head_offset if st else 0

    def node_events(self, node: str, *, after: int) -> list[int]:
        """Offsets of the node's events after an offset."""
        return [e.offset for e in self.store.read_node(node, after=after, limit=1_000_000)]

    def close(self) -> None:
        self.stop()
        self.store.close()
