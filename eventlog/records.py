"""The records both sides keep: events, pod entries, snapshots, cursors.

Frozen and slotted: records are values, compared and hashed, never mutated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Op = Literal["put", "delete"]
PodKey = tuple[str, str]  # (namespace, name): a pod's identity on its node


@dataclass(frozen=True, slots=True)
class Source:
    """Where a change came from in Kubernetes, so the log can answer "why"."""

    uid: str = ""
    resource_version: str = ""
    generation: int = 0


NO_SOURCE = Source()


@dataclass(frozen=True, slots=True)
class Change:
    """A pod change before the log gives it an offset."""

    node: str
    op: Op
    namespace: str
    name: str
    manifest: bytes | None = None  # canonical JSON, for put only
    source: Source = NO_SOURCE


@dataclass(frozen=True, slots=True)
class Event:
    """One pod change on one node, at its place in the log."""

    offset: int
    time_ns: int
    node: str
    op: Op
    namespace: str
    name: str
    manifest: bytes | None = None
    source: Source = NO_SOURCE

    @property
    def key(self) -> PodKey:
        """The pod this event is about."""
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class PodEntry:
    """A pod in a view: its current manifest and the offset that set it."""

    namespace: str
    name: str
    offset: int
    manifest: bytes

    @property
    def key(self) -> PodKey:
        """The pod's identity on its node."""
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class NodeState:
    """What a store knows about one node without reading its pods."""

    node: str
    head_offset: int  # newest event for this node (0: none yet)
    digest: int
    pod_count: int
    compacted_through: int = 0  # newest event of this node dropped by compaction


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A node's whole view as of one offset, read in one transaction."""

    log_id: str
    node: str
    offset: int
    digest: int
    pods: tuple[PodEntry, ...]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a replica stands: which log it follows and how far it applied it."""

    log_id: str
    applied_offset: int


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one replica transaction did."""

    applied: int
    skipped: int
    applied_offset: int
    digest: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One line of an agent's history: an applied event or an installed snapshot."""

    seq: int
    applied_ns: int
    log_id: str
    event: Event | None = None  # set for an applied event
    snapshot_offset: int = 0  # set for an installed snapshot
    snapshot_digest: int = 0
    snapshot_pods: int = 0


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What a compaction dropped."""

    dropped: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """Identity and extent of a store, for stats and health."""

    path: str
    role: str
    log_id: str
    format_version: int
    head_offset: int
    first_offset: int
    event_count: int
    size_bytes: int
