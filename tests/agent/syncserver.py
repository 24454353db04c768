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

from eventlog import Change, Event, LogStore, canonical_manifest
from manager.sync_service import LogNotifier, NullObserver, SyncSettings, create_server
from tests.e2e.processes import free_port


def put(node: str, ns: str, name: str, image: str = "nginx:1.25") -> Change:
    """A put of a small static pod."""
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": image}]}}
    return Change(node, "put", ns, name, canonical_manifest(body))


def delete(node: str, ns: str, name: str) -> Change:
    """A delete of a pod."""
    return Change(node, "delete", ns, name)


class LogServer:
    """manager.sync_service.create_server over a LogStore, restartable on a fixed port."""

    def __init__(self, path: Path, *, port: int | None = None, heartbeat_seconds: float = 1.0) -> None:
        self.path = path
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.store = LogStore(path)
        self.notifier = LogNotifier()
        self.settings = SyncSettings(heartbeat_seconds=heartbeat_seconds)
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
            server, _ = create_server(store=self.store, notifier=self.notifier, observer=NullObserver(),
                                      address=self.address, tls=None, settings=self.settings)
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

    def close(self) -> None:
        self.stop()
        self.store.close()
