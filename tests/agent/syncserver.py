"""A real sync server for agent tests without Kubernetes: manager.sync_service over a LogStore the test appends to.

Tests only (tests may import both manager and agent). The server runs on its own
event loop in a thread of the test process; the agents under test are real
processes connecting to it over loopback. Stopping and starting it on the same
port stands in for a manager that goes down and comes back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path

from eventlog import Change, Event, LogStore, SnapshotCause, canonical_manifest
from manager.sync_service import LogNotifier, NullObserver, ServerTls, SyncSettings, create_server
from tests.e2e.processes import free_port


def put(node: str, ns: str, name: str, image: str = "nginx:1.25") -> Change:
    """A put of a small static pod."""
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": image}]}}
    return Change(node, "put", ns, name, canonical_manifest(body))


def delete(node: str, ns: str, name: str) -> Change:
    """A delete of a pod."""
    return Change(node, "delete", ns, name)


class RecordingObserver(NullObserver):
    """Keeps what agents reported, as the manager's status writer would see it."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, bool, str, int]] = []
        self.acks: list[tuple[str, int]] = []
        self.snapshots: list[tuple[str, str]] = []

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        self.reports.append((node, manifests_ok, message, managed_manifests))

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        self.acks.append((node, applied_offset))

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None:
        self.snapshots.append((node, cause.text))


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
            server, _ = create_server(store=self.store, notifier=self.notifier, observer=self.observer,
                                      address=self.address, tls=self.tls, settings=self.settings)
            await server.start()
            return server

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
