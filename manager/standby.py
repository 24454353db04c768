"""A standby manager's face to the world: its sync service refuses everyone with the leader's address; its metrics.

Owns what a standby serves while it follows (manager/standing.py decides when): Stream and
Follow both answer UNAVAILABLE "not the leader" with the Lease holder's sync address (the sync
service's leadership gate does the refusing), and /readyz says whether it follows a leader and
is caught up. Must not import kubernetes or the agent package.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from eventlog import LogStore
from manager.leadership import Leadership
from manager.notify import LogNotifier
from manager.settings import ServerTls
from manager.sync_service import NullObserver, SyncServer, SyncSettings, create_server

STOP_GRACE_SECONDS = 0.0  # nothing is served: refusals need no grace


class StandbyServer:
    """Builds the standby sync server of each standby phase; one metrics registry for all of them."""

    def __init__(self, *, address: str, tls: ServerTls | None, leadership: Leadership,
                 not_ready: Callable[[], str | None], collectors: tuple[Collector, ...] = ()) -> None:
        self._address = address
        self._tls = tls
        self._leadership = leadership
        self.not_ready = not_ready
        self.registry = CollectorRegistry()
        for c in collectors:
            self.registry.register(c)

    def serving(self, store: LogStore) -> StandbyServing:
        """The server of one standby phase (bound when started)."""
        return StandbyServing(self, store)


class StandbyServing:
    """One standby phase's sync server."""

    def __init__(self, owner: StandbyServer, store: LogStore) -> None:
        self._owner = owner
        self._store = store
        self._server: SyncServer | None = None

    async def start(self) -> None:
        """Bind the sync address and refuse every stream with the leader's address (OSError: cannot bind)."""
        o = self._owner
        self._server = create_server(store=self._store, notifier=LogNotifier(), observer=NullObserver(),
                                     address=o._address, tls=o._tls, settings=SyncSettings(),
                                     leadership=o._leadership)
        await self._server.grpc_server.start()

    async def stop(self) -> None:
        """Unbind, so the leader term's server can bind the same address."""
        if self._server is not None:
            await self._server.grpc_server.stop(STOP_GRACE_SECONDS)
            self._server = None
