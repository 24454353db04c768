"""Rebuilding a node's pods from a starting state and events: the "as of offset" answer.

Owns the pure replay rule (a put sets a pod and its offset, a delete removes it)
and the consistent reads the edge-eventlog tool and verify need: the log's base,
its retained events and its view, read in ONE read transaction so a live writer
never shows a reader half a batch. Imports no kubernetes or grpc.
"""

from __future__ import annotations

from collections.abc import Iterable

from eventlog.digest import pod_hash
from eventlog.encoding import decode_event
from eventlog.errors import CompactedError, OffsetOutOfRangeError
from eventlog.log import LogStore
from eventlog.records import Event, PodEntry, PodKey


class Replayer:
    """A node's pods and digest, changed event by event (the digest kept incrementally)."""

    def __init__(self, pods: dict[PodKey, PodEntry] | None = None) -> None:
        self.pods: dict[PodKey, PodEntry] = dict(pods or {})
        self._hashes = {k: pod_hash(p.namespace, p.name, p.manifest) for k, p in self.pods.items()}
        self.digest = 0
        for h in self._hashes.values():
            self.digest ^= h

    def apply(self, e: Event) -> str | None:
        """Apply one event; returns why it was not a change (the log never records those), else None."""
        key = (e.namespace, e.name)
        old = self.pods.get(key)
        if e.op == "put":
            assert e.manifest is not None
            h = pod_hash(e.namespace, e.name, e.manifest)
            self.digest ^= self._hashes.get(key, 0) ^ h
            self._hashes[key] = h
            self.pods[key] = PodEntry(e.namespace, e.name, e.offset, e.manifest)
            if old is not None and old.manifest == e.manifest:
                return f"put of {e.namespace}/{e.name} repeats the manifest it already had"
            return None
        if old is None:
            return f"delete of {e.namespace}/{e.name}, which the node did not hold"
        self.digest ^= self._hashes.pop(key)
        del self.pods[key]
        return None


def replay(base: dict[PodKey, PodEntry], events: Iterable[Event]) -> dict[PodKey, PodEntry]:
    """The pods after applying events, in order, to a copy of base."""
    r = Replayer(base)
    for e in events:
        r.apply(e)
    return r.pods


def log_state_at(store: LogStore, node: str, offset: int) -> dict[PodKey, PodEntry]:
    """A node's pods as of `offset` (base + its retained events up to it), read in one transaction.

    Raises OffsetOutOfRangeError beyond the head, and CompactedError when events of the
    node after `offset` were compacted (the base then is no longer the state at `offset`).
    """
    with store.reader() as r:  # one read transaction over base, index and log
        head = r.head_offset()
        first = r.first_offset()
        if offset < 0 or offset > head:
            raise OffsetOutOfRangeError(f"offset {offset} is beyond the head of the log ({head})")
        st = r.node_state(node)
        # the base is the state at first - 1; it is also the state at any earlier
        # offset after the node's last compacted event (nothing of it changed since)
        known_from = min(first - 1, st.compacted_through) if st is not None else 0
        if offset < known_from:
            raise CompactedError(
                f"offset {offset} of node {node} was compacted; the log starts at {first} "
                f"(the node's state is known from offset {known_from} on)"
            )
        return replay(r.base(node), map(decode_event, r.node_records(node, through=offset)))


def node_known(store: LogStore, node: str) -> bool:
    """Whether the log ever saw the node."""
    return store.node_state(node) is not None
