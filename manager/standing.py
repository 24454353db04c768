"""Where one manager stands with --leader-elect: standby (following the leader's log) or leader, and the moves between.

Owns the role loop: the elector runs for the whole process; while this manager does not
lead, a standby sync server refuses agents with the leader's address and the follower copies
the leader's log into our store; when the Lease is ours, the follower stops and a leader term
runs (the same term a single manager runs, main.py's `lead`); when the Lease is lost, the term
is fenced (no append, no stream) and stopped at once, and this manager follows again. Builds no
kubernetes client and imports neither grpc's generated code nor the agent package.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from loguru import logger

from eventlog import LogStore
from manager.settings import HighAvailability


FENCE_POLL_SECONDS = 0.25  # how soon a term ends once the fence says the Lease is no longer ours


class Role(enum.Enum):
    """What this manager is doing now (the metric k8s_edge_manager_leader is 1 for LEADER)."""

    STARTING = "starting"
    STANDBY = "standby"
    LEADER = "leader"
    STOPPING = "stopping"


class Elector(Protocol):
    """What the role loop needs of manager.leader_election.LeaderElector."""

    def run(self, stop: threading.Event) -> None: ...

    def is_leader(self) -> bool: ...

    def release(self) -> None: ...


class Follow(Protocol):
    """What the role loop needs of manager.following.Follower: follow until told to stop, hand back the store."""

    async def run(self, stop: asyncio.Event) -> LogStore: ...


class StandbyServer(Protocol):
    """The sync server of a standby: it refuses agents and standbys with the leader's address."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """How the role loop builds each phase's pieces (main.py supplies them; tests supply small ones)."""

    elector: Callable[[Callable[[], None], Callable[[], None]], Elector]
    """elector(on_started_leading, on_stopped_leading): callbacks run on the elector's thread."""
    follower: Callable[[LogStore], Follow]
    standby_server: Callable[[LogStore], StandbyServer]
    lead: Callable[[LogStore, asyncio.Event, Callable[[], bool]], Awaitable[None]]
    """lead(store, until, fenced): one leader term until `until` is set; `fenced()` true once the Lease is lost."""
    on_role: Callable[[Role], None] = lambda role: None
    """Told of every role change (pod label, metrics, readiness)."""


class Standing:
    """The role loop of one manager with --leader-elect."""

    def __init__(self, store: LogStore, *, settings: HighAvailability, parts: Parts) -> None:
        self.store = store
        self.role = Role.STARTING
        self.transitions = 0  # leader terms this process began
        self._settings = settings
        self._parts = parts
        self._leading = asyncio.Event()
        self._lost = asyncio.Event()
        self._elector_stop = threading.Event()

    def _set_role(self, role: Role) -> None:
        if role is not self.role:
            self.role = role
            self._parts.on_role(role)

    async def run(self, stop: asyncio.Event) -> LogStore:
        """Stand by and lead in turn until `stop`; return the store (a copy from the leader may have replaced it)."""
        loop = asyncio.get_running_loop()

        def started() -> None:
            loop.call_soon_threadsafe(self._leading.set)

        def stopped() -> None:
            loop.call_soon_threadsafe(self._lost.set)

        elector = self._parts.elector(started, stopped)
        thread = threading.Thread(target=elector.run, args=(self._elector_stop,), name="leader-election", daemon=True)
        thread.start()
        try:
            while not stop.is_set():
                await self._stand_by(stop)
                if stop.is_set():
                    break
                if not elector.is_leader():  # lost again before the term began
                    self._leading.clear()
                    continue
                await self._lead(stop, elector)
        finally:
            self._set_role(Role.STOPPING)
            self._elector_stop.set()
            if elector.is_leader():
                await asyncio.to_thread(elector.release)  # the next leader need not wait out the lease
            await asyncio.to_thread(thread.join, self._settings.lease.renew_deadline + 5)
        return self.store

    async def _stand_by(self, stop: asyncio.Event) -> None:
        """Refuse agents, follow the leader, until the Lease is ours or `stop`."""
        self._set_role(Role.STANDBY)
        server = self._parts.standby_server(self.store)
        await server.start()
        follow_stop = asyncio.Event()
        follower = self._parts.follower(self.store)
        following = asyncio.create_task(follower.run(follow_stop), name="follow")
        try:
            await _first(stop.wait(), self._leading.wait(), following)
            if following.done() and not (stop.is_set() or self._leading.is_set()):
                await asyncio.sleep(1.0)  # the follower ended by itself (a bug): do not spin
        finally:
            follow_stop.set()
            try:
                self.store = await following  # waits for an in-flight apply to commit
            except Exception as exc:  # noqa: BLE001 (the follower's own bug: the store we had is still whole)
                logger.opt(exception=exc).error("following the leader failed")
            await server.stop()

    async def _lead(self, stop: asyncio.Event, elector: Elector) -> None:
        """One leader term: until `stop` or the Lease is lost (then fenced: no append, no stream, at once)."""
        self._lost.clear()
        self._leading.clear()
        self.transitions += 1
        self._set_role(Role.LEADER)
        logger.info("leading (term {} of this process): relisting EdgeNodes and serving agents from offset {}",
                    self.transitions, self.store.head_offset)
        until = asyncio.Event()

        async def watch() -> None:
            # the callback says so at once; the poll makes sure the fence alone also ends the term
            while not (stop.is_set() or self._lost.is_set() or not elector.is_leader()):
                await _first(stop.wait(), self._lost.wait(), asyncio.sleep(FENCE_POLL_SECONDS))
            until.set()

        watcher = asyncio.create_task(watch(), name="leader-term")
        try:
            await self._parts.lead(self.store, until, lambda: not elector.is_leader())
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if not stop.is_set():
            logger.warning("lost the Lease: stopped appending and serving agents; following the new leader")


async def _first(*waits: Awaitable[object]) -> None:
    """Return when the first of these completes; cancel the others that this call created."""
    tasks = [w if isinstance(w, asyncio.Task) else asyncio.ensure_future(w) for w in waits]
    owned = [t for t, w in zip(tasks, waits, strict=True) if t is not w]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in owned:
            t.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
