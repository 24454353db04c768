"""In-process wakeups from the recorder to the sync streams of the nodes it appended for.

Owns the per-node subscriber sets. Imports neither grpc nor kubernetes: the
recorder calls notify_threadsafe() after each append, so streams never poll the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class LogNotifier:
    """Wakes every stream that follows one of the given nodes."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, node: str, event: asyncio.Event) -> None:
        """Set `event` whenever events for `node` are appended (call on the loop thread)."""
        self._loop = asyncio.get_running_loop()
        self._waiters.setdefault(node, set()).add(event)

    def unsubscribe(self, node: str, event: asyncio.Event) -> None:
        """Stop waking `event`; safe to call twice."""
        waiters = self._waiters.get(node)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[node]

    def notify(self, nodes: Iterable[str]) -> None:
        """Wake the streams of these nodes; must be called on the loop thread."""
        for node in set(nodes):
            for event in self._waiters.get(node, ()):
                event.set()

    def notify_all(self) -> None:
        """Wake every stream (this manager stopped leading: each ends at once); on the loop thread."""
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def notify_threadsafe(self, nodes: Iterable[str]) -> None:
        """notify() from any thread; a no-op while no stream has subscribed."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.notify, tuple(nodes))

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the streams run on, once one has subscribed."""
        return self._loop

    def subscribers(self, node: str) -> int:
        """How many streams follow `node` (for tests and metrics)."""
        return len(self._waiters.get(node, ()))
