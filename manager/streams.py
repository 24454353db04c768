"""Which sync streams are open: the global cap and the one live stream per node.

Owns admission (--max-streams), the replacement of a node's older stream by its newer
one, and the once-per-reason logging of refusals. Used on the event loop thread only
(gRPC aio handlers), so it needs no lock. Must not import grpc, kubernetes or the agent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from loguru import logger

DEFAULT_MAX_STREAMS = 10_000
MAX_STREAMS_PER_NODE = 8  # open streams of one node (live + replaced, not yet ended): one identity's share of the cap
_MAX_REMEMBERED_REFUSALS = 1024  # distinct refusal lines remembered for log de-duplication


class Replaceable(Protocol):
    """A live stream that a newer stream of the same node can end."""

    def replace(self, *, by_peer: str) -> None: ...

    def refuse(self, *, why: str) -> None: ...


class StreamTable:
    """Counts open streams against the cap and keeps at most one live stream per node."""

    def __init__(self, *, max_streams: int = DEFAULT_MAX_STREAMS, max_per_node: int = MAX_STREAMS_PER_NODE) -> None:
        if max_streams < 1 or max_per_node < 1:
            raise ValueError(f"stream limits must be at least 1, got {max_streams} and {max_per_node}")
        self.max_streams = max_streams
        self.max_per_node = max_per_node
        self.open = 0  # streams inside the handler: before Hello, live, or replaced and not yet ended
        self.refused = 0  # streams refused for the cap, since start
        self.replaced = 0  # live streams ended by a newer one of their node, since start
        self._live: dict[str, Replaceable] = {}
        self._per_node: dict[str, int] = {}  # claimed streams not yet finished, by node
        self._refusals: dict[str, int] = {}
        self._refused_nodes: set[str] = set()  # nodes whose EdgeNode says edge.k8s.io/agent-refused (refusals.py)

    def enter(self) -> bool:
        """Admit a new stream unless the cap is reached."""
        if self.open >= self.max_streams:
            self.refused += 1
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        """A stream admitted by enter() ended."""
        self.open = max(0, self.open - 1)

    def claim(self, node: str, stream: Replaceable, *, peer: str) -> bool:
        """Make `stream` the node's live stream (the one it replaces is told to end); False when the node
        already has max_per_node streams open (replaced ones whose peers neither read nor died)."""
        if self._per_node.get(node, 0) >= self.max_per_node:
            self.refused += 1
            return False
        self._per_node[node] = self._per_node.get(node, 0) + 1
        old = self._live.get(node)
        self._live[node] = stream
        if old is not None and old is not stream:
            self.replaced += 1
            old.replace(by_peer=peer)
        return True

    def release(self, node: str, stream: Replaceable) -> None:
        """`stream` ended; the node has no live stream unless a newer one already claimed it."""
        if self._live.get(node) is stream:
            del self._live[node]

    def finish(self, node: str) -> None:
        """A stream that claim() admitted ended."""
        n = self._per_node.get(node, 0) - 1
        if n > 0:
            self._per_node[node] = n
        else:
            self._per_node.pop(node, None)

    def refuse_nodes(self, nodes: Iterable[str], *, why: str) -> None:
        """Refuse new streams of `nodes` and drop their live streams at once."""
        for node in nodes:
            self._refused_nodes.add(node)
            live = self._live.get(node)
            if live is not None:
                live.refuse(why=why)

    def allow_nodes(self, nodes: Iterable[str]) -> None:
        """Let refused nodes stream again."""
        self._refused_nodes.difference_update(nodes)

    def is_refused(self, node: str) -> bool:
        """Whether new streams of `node` are refused."""
        return node in self._refused_nodes

    def live(self, node: str) -> Replaceable | None:
        """The node's live stream, if any."""
        return self._live.get(node)

    @property
    def live_count(self) -> int:
        """Nodes with a live stream."""
        return len(self._live)

    def log_refusal(self, text: str) -> None:
        """Log a refusal at WARNING the first time it is seen, at DEBUG after (an agent retries it forever)."""
        seen = self._refusals.get(text)
        if seen is None:
            if len(self._refusals) >= _MAX_REMEMBERED_REFUSALS:
                self._refusals.clear()
            self._refusals[text] = 1
            logger.warning("{}", text)
        else:
            self._refusals[text] = seen + 1
            logger.debug("{} (again: {} times)", text, seen + 1)
